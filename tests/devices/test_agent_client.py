"""The agent protocol's records, checked on arrival: an agent of another version, or a reply without the record's
shape, is refused in one line by the client, not met as a KeyError in a stage."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeprune._resources import resource_dir
from edgeprune.devices.agent_client import AgentBug, AgentSession, reply_problem
from edgeprune.devices.transport import LocalTransport
from edgeprune.errors import DeviceError
from edgeprune.types import AGENT_VERSION, BenchResult, DeviceInfo, EngineBuild, LatencyStats


def _agent_version_in_the_agent_source() -> int:
    tree = ast.parse((resource_dir("targets") / "agent.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == [
            "AGENT_VERSION"
        ]:
            return ast.literal_eval(node.value)
    raise AssertionError("targets/agent.py defines no AGENT_VERSION")


def test_the_records_are_versioned_with_the_agent():
    assert AGENT_VERSION == _agent_version_in_the_agent_source()


class _ScriptedTransport(LocalTransport):
    """An agent that announces `ready` and answers every request with `result`."""

    def __init__(self, ready: dict, result: object):
        super().__init__()
        self.ready, self.result = ready, result

    def start_agent(self, stderr_log: Path) -> subprocess.Popen:
        code = (
            "import sys, json\n"
            f"print(json.dumps({self.ready!r}), flush=True)\n"
            "for line in sys.stdin:\n"
            "    request = json.loads(line)\n"
            "    if request['cmd'] == 'quit': break\n"
            f"    print(json.dumps({{'id': request['id'], 'ok': True, 'result': {self.result!r}}}), flush=True)\n"
        )
        return subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(stderr_log, "wb")
        )


@pytest.mark.parametrize("ready", [{"event": "ready", "agent_version": AGENT_VERSION - 1}, {"event": "ready"}])
def test_an_agent_of_another_version_is_refused_in_one_line(ready):
    with pytest.raises(DeviceError, match=f"speaks protocol version .*expected version {AGENT_VERSION}") as refused:
        AgentSession(_ScriptedTransport(ready, {}))
    assert "\n" not in str(refused.value)


BENCH = {"timings_ms": [1.0, 2.0, 3.0], "threads": 2, "warmup": 1, "runtime": "onnxruntime", "runtime_version": "1"}


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ({**BENCH, "timings_ms": "fast"}, "'timings_ms' is 'fast'"),
        ({k: v for k, v in BENCH.items() if k != "runtime"}, "no 'runtime'"),
        ([1.0, 2.0], "list, not an object"),
    ],
)
def test_a_malformed_reply_is_an_agent_bug_in_one_line(tmp_path, reply, problem):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    ready = {"event": "ready", "agent_version": AGENT_VERSION}
    with AgentSession(_ScriptedTransport(ready, reply)) as agent:
        with pytest.raises(AgentBug, match=f"answered bench with a malformed reply \\({problem}") as bug:
            agent.bench(model, "onnxruntime", threads=2, warmup=1, runs=30)
    assert "\n" not in str(bug.value)


def test_replies_are_checked_field_by_field():
    assert reply_problem(BenchResult, BENCH) is None
    assert reply_problem(BenchResult, {**BENCH, "extra": 1, "power": None}) is None  # more than this host reads
    assert reply_problem(BenchResult, {**BENCH, "threads": 2.5}) == "'threads' is 2.5"
    assert reply_problem(BenchResult, {**BENCH, "threads": True}) == "'threads' is True"
    assert reply_problem(BenchResult, {**BENCH, "timings_ms": [1, "x"]}) == "'timings_ms' is [1, 'x']"
    assert reply_problem(EngineBuild, {"engine": "/e", "tensorrt_version": "10.3", "build_s": 1}) == "no 'precision'"
    assert reply_problem(DeviceInfo, {"target": "t"}) == "no 'hostname'"


def test_a_bench_result_is_latency_stats_of_its_runs():
    result = BenchResult._from_fields({**BENCH, "batch": 1})
    assert isinstance(result.timings_ms, tuple)
    expected = LatencyStats.from_samples(
        [1.0, 2.0, 3.0], warmup=1, runtime="onnxruntime", runtime_version="1", threads=2, method="m"
    )
    assert result.latency_stats("m") == expected
    pooled = result.latency_stats("m", pooled_ms=[1.0, 2.0, 3.0, 4.0])
    assert pooled.n == 4 and pooled.median_ms == 2.5
    assert json.loads(result.to_json())["kind"] == "BenchResult"


def test_the_real_agent_replies_in_records(tiny_onnx):
    with AgentSession(LocalTransport()) as agent:
        info = agent.info("host", "onnxruntime")
        result = agent.bench(tiny_onnx, "onnxruntime", threads=1, warmup=1, runs=30)
    assert isinstance(info, DeviceInfo) and info.target == "host" and isinstance(info.providers, tuple)
    assert isinstance(result, BenchResult) and len(result.timings_ms) == 30 and result.latency_stats().n == 30
