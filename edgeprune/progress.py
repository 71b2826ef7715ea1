"""Progress for long work, on stderr so that `--json` output on stdout stays clean: rich bars on a terminal, plain
timestamped lines anywhere else (a CI log, `tee`, a service)."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TextIO

_interrupt = {"requested": False}
_STARTED = time.monotonic()  # the plain lines count seconds from here: about when the command started


def watch_interrupts() -> None:
    """Ctrl-C raises KeyboardInterrupt as usual and is also remembered: a library that swallows the exception (a
    bare `except:` in a dependency) cannot make edgeprune carry on, since `check_interrupt` raises it again at the
    next progress update or stage boundary."""
    import signal

    def handler(signum, frame):
        _interrupt["requested"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)


def check_interrupt() -> None:
    if interrupt_requested():
        raise KeyboardInterrupt


def interrupt_requested() -> bool:
    """Ctrl-C was pressed (an error after it is the interrupt's doing, whatever a library made of it)."""
    return _interrupt["requested"]


class Progress(Protocol):
    def task(self, description: str, total: int) -> contextlib.AbstractContextManager[Callable[[int], None]]:
        """A context whose value is `update(completed)`."""

    def note(self, text: str) -> None:
        """One line that stays, where the bars are shown."""

    def stage(self, text: str) -> contextlib.AbstractContextManager[None]:
        """A context around one stage of long work (`text` says which): where it starts, and where it ends."""


def progress_for_stderr() -> Progress:
    """Rich bars when stderr is a terminal; plain lines (with a heartbeat) when it is a file, a pipe or a log."""
    if sys.stderr.isatty():
        return RichProgress()
    return PlainProgress(sys.stderr, started=_STARTED)


class NoProgress:
    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        yield lambda completed: None

    def note(self, text: str) -> None:
        pass

    @contextlib.contextmanager
    def stage(self, text: str) -> Iterator[None]:
        yield


class RichProgress:
    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=self.console, transient=True) as bar:
            task_id = bar.add_task(description, total=total)

            def update(completed: int) -> None:
                check_interrupt()
                bar.update(task_id, completed=completed)

            yield update

    def note(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    @contextlib.contextmanager
    def stage(self, text: str) -> Iterator[None]:
        self.note(text)
        yield


@dataclass(eq=False)  # open activities are told apart by identity
class _Activity:
    text: str
    started: float
    total: int | None = None  # None: a stage, which counts nothing
    completed: int = 0
    last_line: float = 0.0


class PlainProgress:
    """Plain lines, each stamped with the seconds since `started`: a stage's start and its end with the time it
    took; a task's start, at most one line per `interval_s` while it runs, and its end. While anything is open a
    heartbeat thread says what is still running once nothing was written for `heartbeat_s`, so a log stays alive
    through one long call that reports nothing. `clock` is for tests."""

    def __init__(self, stream: TextIO, *, started: float | None = None, interval_s: float = 10.0,
                 heartbeat_s: float = 15.0, heartbeat: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.stream = stream
        self.clock = clock
        self.started = clock() if started is None else started
        self.interval_s, self.heartbeat_s = interval_s, heartbeat_s
        self.heartbeat = heartbeat
        self._lock = threading.RLock()  # the heartbeat thread writes and reads the open activities too
        self._open: list[_Activity] = []
        self._last_line = clock()
        self._beating: tuple[threading.Thread, threading.Event] | None = None

    def note(self, text: str) -> None:
        self._write(text)

    @contextlib.contextmanager
    def stage(self, text: str) -> Iterator[None]:
        activity = self._enter(text, None)
        try:
            yield
        finally:
            ended = self._leave(activity)
        self._write(f"{text}, done in {_duration(ended - activity.started)}")

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        activity = self._enter(description, total)

        def update(completed: int) -> None:
            check_interrupt()
            with self._lock:
                activity.completed = completed
                now = self.clock()
                if now - activity.last_line >= self.interval_s and completed < total:
                    self._write(f"{description}: {_counted(activity)}{_left(activity, now)}", now)
                    activity.last_line = now

        try:
            yield update
        finally:
            ended = self._leave(activity)
        self._write(f"{description}: {_counted(activity)}, done in {_duration(ended - activity.started)}")

    def beat(self) -> None:
        """One heartbeat: what is running and for how long, when something is and nothing was written for
        `heartbeat_s` (the heartbeat thread calls it about every second)."""
        with self._lock:
            now = self.clock()
            if not self._open or now - self._last_line < self.heartbeat_s:
                return
            activity = self._open[-1]
            counted = f" at {_counted(activity)}" if activity.total is not None else ""
            self._write(f"still {activity.text}{counted} ({_duration(now - activity.started)} so far)", now)

    def _enter(self, text: str, total: int | None) -> _Activity:
        with self._lock:
            now = self.clock()
            activity = _Activity(text, now, total, last_line=now)
            self._write(text if total is None else f"{text}: 0/{total}", now)
            self._open.append(activity)
            if self.heartbeat and self._beating is None:
                stop = threading.Event()
                thread = threading.Thread(target=self._beat_until, args=(stop,), name="edgeprune-heartbeat",
                                          daemon=True)  # fmt: skip
                self._beating = (thread, stop)
                thread.start()
            return activity

    def _leave(self, activity: _Activity) -> float:
        """Closes `activity`; the heartbeat stops with the last open one. Returns the time it ended."""
        with self._lock:
            self._open.remove(activity)
            beating = self._beating if not self._open else None
            if beating is not None:
                self._beating = None
                beating[1].set()
            ended = self.clock()
        if beating is not None:
            beating[0].join(timeout=5)  # outside the lock, which a beat in progress holds
        return ended

    def _beat_until(self, stop: threading.Event) -> None:
        poll = min(1.0, self.heartbeat_s / 4)
        while not stop.wait(poll):
            self.beat()

    def _write(self, text: str, now: float | None = None) -> None:
        with self._lock:
            now = self.clock() if now is None else now
            self.stream.write(f"[{now - self.started:5.0f} s] {text}\n")
            self.stream.flush()
            self._last_line = now


def _counted(activity: _Activity) -> str:
    return f"{activity.completed}/{activity.total}"


def _left(activity: _Activity, now: float) -> str:
    """ " (40 %, about 2 min 10 s left)" from the pace so far."""
    if not activity.total or activity.completed <= 0:
        return ""
    share = activity.completed / activity.total
    left = (now - activity.started) * (1 - share) / share
    return f" ({100 * share:.0f} %, about {_duration(left)} left)"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
