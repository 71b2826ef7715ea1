"""Progress where stderr is not a terminal: plain lines stamped with the seconds since the command started, at most
one per 10 s per task, stages with their start and end, and a heartbeat through a long silent call that stops
with the work. Timing is a fake clock here; the heartbeat thread is also run for real."""

from __future__ import annotations

import io
import os
import re
import threading
import time

import pytest

from edgeprune import progress as progress_module
from edgeprune.progress import PlainProgress, RichProgress, progress_for_stderr

STAMPED = re.compile(r"^\[ *(\d+) s\] (.+)$")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(stream: io.StringIO) -> list[tuple[int, str]]:
    found = []
    for line in stream.getvalue().splitlines():
        match = STAMPED.match(line)
        assert match, f"not a stamped line: {line!r}"
        found.append((int(match[1]), match[2]))
    return found


def _plain(clock: FakeClock, stream: io.StringIO) -> PlainProgress:
    return PlainProgress(stream, started=clock.now, clock=clock, heartbeat=False)


def test_a_task_writes_at_most_one_progress_line_per_ten_seconds():
    clock, stream = FakeClock(), io.StringIO()
    progress = _plain(clock, stream)
    clock.now += 3
    with progress.task("fine-tune", 100) as update:
        for step in range(1, 96):  # a step a second, and a burst of steps at 50 s
            clock.now += 1
            update(step)
            if step == 50:
                for _ in range(5):
                    update(step)
    lines = _lines(stream)
    assert lines[0] == (3, "fine-tune: 0/100")
    assert lines[-1] == (98, "fine-tune: 95/100, done in 1 min 35 s")
    during = [(at, text) for at, text in lines[1:-1]]
    assert [at for at, _ in during] == [13, 23, 33, 43, 53, 63, 73, 83, 93]
    assert during[0][1] == "fine-tune: 10/100 (10 %, about 1 min 30 s left)"
    assert all(text.startswith("fine-tune: ") for _, text in during)


def test_a_stage_says_when_it_starts_and_ends_with_its_elapsed_time():
    clock, stream = FakeClock(), io.StringIO()
    progress = _plain(clock, stream)
    with progress.stage("build stage 1/7: profile"):
        clock.now += 125
    with pytest.raises(RuntimeError), progress.stage("build stage 2/7: lut"):
        clock.now += 4
        raise RuntimeError("failed")  # a stage that fails does not say it is done
    progress.note("a note")
    assert _lines(stream) == [
        (0, "build stage 1/7: profile"),
        (125, "build stage 1/7: profile, done in 2 min 05 s"),
        (125, "build stage 2/7: lut"),
        (129, "a note"),
    ]


def test_the_heartbeat_names_what_runs_after_fifteen_quiet_seconds_and_not_once_it_ended():
    clock, stream = FakeClock(), io.StringIO()
    progress = _plain(clock, stream)
    with progress.stage("build stage 5/7: export"):
        clock.now += 14
        progress.beat()  # 14 s quiet: nothing yet
        clock.now += 1
        progress.beat()
        progress.beat()  # it just wrote: quiet again for 15 s before the next
        with progress.task("export to onnx (fp32)", 3) as update:
            clock.now += 2
            update(1)  # within 10 s of the task's start: no line
            clock.now += 15
            progress.beat()
        clock.now += 15
    progress.beat()  # nothing is open: nothing to say
    clock.now += 60
    progress.beat()
    assert _lines(stream) == [
        (0, "build stage 5/7: export"),
        (15, "still build stage 5/7: export (15 s so far)"),
        (15, "export to onnx (fp32): 0/3"),
        (32, "still export to onnx (fp32) at 1/3 (17 s so far)"),
        (32, "export to onnx (fp32): 1/3, done in 17 s"),
        (47, "build stage 5/7: export, done in 47 s"),
    ]


def _heartbeats_alive() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "edgeprune-heartbeat"]


def test_the_heartbeat_thread_runs_while_work_is_open_and_stops_with_it():
    stream = io.StringIO()
    progress = PlainProgress(stream, heartbeat_s=0.2)
    assert not _heartbeats_alive()
    with progress.stage("a long call that reports nothing"):
        with progress.task("inner", 10):
            assert len(_heartbeats_alive()) == 1  # one thread, however deep the nesting
            time.sleep(0.7)
        time.sleep(0.7)
    assert not _heartbeats_alive()
    written = stream.getvalue()
    time.sleep(0.5)
    assert stream.getvalue() == written  # nothing after the work ended
    texts = [text for _, text in _lines(stream)]
    assert any(t.startswith("still inner at 0/10 (") for t in texts)
    assert any(t.startswith("still a long call that reports nothing (") for t in texts)
    assert texts[-1].startswith("a long call that reports nothing, done in ")


def test_an_update_after_ctrl_c_raises_it_again(monkeypatch):
    monkeypatch.setitem(progress_module._interrupt, "requested", True)  # a library swallowed the first one
    progress = PlainProgress(io.StringIO(), heartbeat=False)
    with pytest.raises(KeyboardInterrupt), progress.task("verify on onnxruntime", 5) as update:
        update(1)


def test_stderr_picks_plain_lines_unless_it_is_a_terminal(monkeypatch, tmp_path):
    with open(tmp_path / "log", "w") as log:
        monkeypatch.setattr("sys.stderr", log)
        assert isinstance(progress_for_stderr(), PlainProgress)
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal:
        monkeypatch.setattr("sys.stderr", terminal)
        assert isinstance(progress_for_stderr(), RichProgress)
    os.close(leader)
