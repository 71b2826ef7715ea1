"""The real agent (targets/agent.py) in a subprocess, driven through the local transport."""

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgeprune._resources import resource_dir
from edgeprune.devices.agent_client import AgentBug, AgentSession
from edgeprune.devices.transport import LocalTransport
from edgeprune.errors import DeviceError
from edgeprune.types import AGENT_VERSION

AGENT = resource_dir("targets") / "agent.py"


def test_agent_source_parses_as_python_3_6():
    # Jetson Nano's JetPack 4 ships Python 3.6; feature_version makes newer syntax a SyntaxError.
    ast.parse(AGENT.read_text(), feature_version=(3, 6))
    assert "from __future__ import annotations" not in AGENT.read_text()


def test_info_reports_the_runtime_and_cores():
    with AgentSession(LocalTransport()) as agent:
        info = agent.info("host", "onnxruntime")
    assert info.runtime_version == ort.__version__
    assert "CPUExecutionProvider" in info.providers
    assert info.cpu_count >= 1 and info.python == ".".join(map(str, sys.version_info[:3]))


def test_bench_times_every_run_and_reports_progress(tiny_onnx):
    seen = []
    with AgentSession(LocalTransport()) as agent:
        result = agent.bench(
            tiny_onnx,
            "onnxruntime",
            threads=1,
            warmup=2,
            runs=30,
            on_progress=lambda done, total: seen.append((done, total)),
        )
    assert len(result.timings_ms) == 30 and all(t > 0 for t in result.timings_ms)
    assert result.threads == 1 and result.input_shapes == {"input": [1, 3, 32, 32]}
    assert seen[-1] == (30, 30)


def test_run_matches_onnxruntime_in_process(tiny_onnx):
    x = np.random.default_rng(0).standard_normal((7, 3, 32, 32)).astype(np.float32)
    expected = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with AgentSession(LocalTransport()) as agent:
        outputs = agent.run(tiny_onnx, "onnxruntime", {"input": x}, threads=None)
    assert np.abs(outputs["output"] - expected).max() < 1e-5


def test_a_bad_request_is_an_error_and_the_session_survives(tiny_onnx, tmp_path):
    with AgentSession(LocalTransport()) as agent:
        with pytest.raises(DeviceError, match="model file not found on the device"):
            agent.bench(tmp_path / "missing.onnx", "onnxruntime", threads=1, warmup=0, runs=30)
        with pytest.raises(DeviceError, match="runtime 'tensorrtx' is not supported"):
            agent.bench(tiny_onnx, "tensorrtx", threads=1, warmup=0, runs=30)
        with pytest.raises(DeviceError, match=r"inputs \['wrong'\] given"):
            agent.run(tiny_onnx, "onnxruntime", {"wrong": np.zeros((1, 3, 32, 32), np.float32)}, threads=1)
        assert agent.info("host", "onnxruntime").runtime == "onnxruntime"


def test_an_internal_agent_error_is_a_bug_with_the_agents_traceback_not_a_device_error():
    with AgentSession(LocalTransport()) as agent:
        # args must be an object: a list reaches code that no user input reaches, and fails there
        with pytest.raises(
            AgentBug, match=r"(?s)failed bench with an internal error: AttributeError.*Traceback"
        ) as bug:
            agent.request("bench", ["not", "an", "object"])
        assert not isinstance(bug.value, DeviceError)  # so the CLI shows it as a bug, not as exit 2
        assert agent.info("host", "onnxruntime").runtime == "onnxruntime"  # the session goes on


def test_a_failed_start_leaves_no_scratch_folder(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # a private temp dir: the check below is exact
    with pytest.raises(DeviceError, match="cannot start the local agent"):
        AgentSession(LocalTransport(python=str(tmp_path / "no-python")))
    assert not list(tmp_path.glob("edgeprune-*"))


class _DyingTransport(LocalTransport):
    """An agent that starts and then dies mid-session, like a device that drops off."""

    def start_agent(self, stderr_log: Path) -> subprocess.Popen:
        code = (
            f"import sys, json; print(json.dumps({{'event': 'ready', 'agent_version': {AGENT_VERSION}}}), flush=True); "
            "sys.stdin.readline(); "
            "sys.stderr.write('device lost power\\n'); sys.exit(9)"
        )
        return subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(stderr_log, "wb")
        )


def test_agent_death_is_a_device_error_with_its_last_words():
    with pytest.raises(DeviceError, match=r"exited \(code 9\): device lost power"):
        with AgentSession(_DyingTransport()) as agent:
            agent.info("host", "onnxruntime")


class _SilentTransport(LocalTransport):
    def start_agent(self, stderr_log: Path) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(stderr_log, "wb"),
        )


def test_a_silent_device_times_out(monkeypatch):
    monkeypatch.setattr("edgeprune.devices.agent_client._START_TIMEOUT_S", 1.0)
    with pytest.raises(DeviceError, match="sent nothing for 1 s"):
        AgentSession(_SilentTransport())
