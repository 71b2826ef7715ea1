"""targets/agent*.py run on Jetson Nano's JetPack 4, whose Python is 3.6: no newer syntax, no newer library calls."""

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeprune._resources import resource_dir
from edgeprune.devices.transport import agent_files

TARGETS = resource_dir("targets")
AGENT_SOURCES = sorted(TARGETS.glob("agent*.py"))


def test_every_agent_file_is_shipped_to_ssh_devices():
    assert sorted(p.name for p in AGENT_SOURCES) == sorted(agent_files())


def test_the_shipped_files_alone_run_the_agent(tmp_path):
    # what ssh copies to a device: an agent module outside agent_files() fails here with an ImportError
    for name in agent_files():
        shutil.copy(TARGETS / name, tmp_path / name)
    assert agent_files()[-1] == "agent.py"  # copied last: a device folder holding it is complete
    requests = '{"id": 1, "cmd": "info", "args": {}}\n{"id": 2, "cmd": "quit"}\n'
    proc = subprocess.run(
        [sys.executable, "-u", str(tmp_path / "agent.py")],
        input=requests,
        capture_output=True,
        text=True,
        timeout=120,
    )
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    assert replies[0]["event"] == "ready", proc.stderr
    assert replies[1]["ok"] and "sensors" in replies[1]["result"] and "tensorrt" in replies[1]["result"]["runtimes"]


@pytest.mark.parametrize("source", AGENT_SOURCES, ids=lambda p: p.name)
def test_agent_parses_as_python_3_6(source):
    ast.parse(source.read_text(), feature_version=(3, 6))  # newer syntax (walrus, f"{x=}", ...) is a SyntaxError
    assert "from __future__ import annotations" not in source.read_text()


def test_agent_uses_nothing_newer_than_python_3_6():
    # vermin knows the minimum version of every stdlib module, function and keyword argument (e.g.
    # subprocess.run(capture_output=...) needs 3.7). "--target=3.6-" means "3.6 or older"; a plain "3.6" would
    # demand that the file need exactly 3.6 and fail for a file that needs less.
    vermin = shutil.which("vermin") or str(Path(sys.executable).with_name("vermin"))
    if not Path(vermin).exists():
        pytest.fail('vermin is not installed: pip install "edgeprune[test]"')
    proc = subprocess.run(
        [vermin, "--target=3.6-", "--no-tips", "--violations", "--eval-annotations", *map(str, AGENT_SOURCES)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout
