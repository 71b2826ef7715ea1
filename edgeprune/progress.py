"""Progress bars for long work, on stderr so that `--json` output on stdout stays clean."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol

_interrupt = {"requested": False}


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
        """One line that stays (a stage starting), where the bars are shown."""


class NoProgress:
    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        yield lambda completed: None

    def note(self, text: str) -> None:
        pass


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
