"""The latency table over ssh: a device lost mid-build is a one-line error, and the rerun measures only what the
lost run had not (tests/devices/conftest.py starts the sshd)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from edgeprune.latency.lut import LutReport
from tests.devices.conftest import start_sshd, stop_sshd


def _lut_command(target, cache, out) -> list[str]:
    return [sys.executable, "-m", "edgeprune.cli", "profile", "--target", str(target), "--model", "cifar:resnet20",
            "--threads", "1", "--runs", "30", "--lut", "--lut-variants", "1", "--lut-calibration", "0", "--step", "8",
            "--cache", str(cache), "--out", str(out), "--json"]  # fmt: skip


def _cached_lines(cache) -> int:
    return sum(len(f.read_text().splitlines()) for f in cache.glob("*.jsonl"))


def test_killing_sshd_mid_table_keeps_what_was_measured_and_the_rerun_resumes(ssh_keys, tmp_path):
    cache = tmp_path / "cache"
    server = start_sshd(ssh_keys, tmp_path / "first")
    try:
        cli = subprocess.Popen(_lut_command(server.profile(tmp_path / "first.yaml"), cache, tmp_path / "out1"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 240
        while _cached_lines(cache) < 5:  # a few layers measured: the build is under way
            assert cli.poll() is None and time.monotonic() < deadline, cli.communicate()[1]
            time.sleep(0.05)
        server.kill()
        _, stderr = cli.communicate(timeout=60)
    finally:
        stop_sshd(server)
    assert cli.returncode == 2 and "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]  # lost while the agent ran, or while a layer's model was being copied
    assert last.startswith("edgeprune: error:") and f"@127.0.0.1:{server.port}" in last and "fix:" in last, stderr
    kept = _cached_lines(cache)
    assert kept >= 5

    server = start_sshd(ssh_keys, tmp_path / "second")  # the device is back (on another port)
    try:
        rerun = subprocess.run(_lut_command(server.profile(tmp_path / "second.yaml"), cache, tmp_path / "out2"),
                               capture_output=True, text=True, timeout=600)  # fmt: skip
    finally:
        stop_sshd(server)
    assert rerun.returncode == 0, rerun.stderr
    report = LutReport.from_dict(json.loads(rerun.stdout))
    assert report.from_cache == kept and report.measured_now == len(report.entries) - kept > 0
    assert report.corrupted_lines == 0 and _cached_lines(cache) == 2 * len(report.entries)  # two passes each
