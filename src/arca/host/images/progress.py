"""Progress display for pulls: rich bars on a terminal, nothing otherwise."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # rich costs ~40 ms to import (more under load): only for a terminal
    from rich.progress import TaskID


class PullProgress(Protocol):
    def add(self, label: str, total: int) -> object: ...
    def advance(self, task: object, n: int) -> None: ...
    def message(self, text: str) -> None: ...


class QuietProgress:
    def add(self, label: str, total: int) -> object:
        return None

    def advance(self, task: object, n: int) -> None:
        pass

    def message(self, text: str) -> None:
        pass


class RichProgress:
    """Bars on stderr, one per layer and one for the whole pull (its total and speed), and a
    done line at the end (bytes, time, speed); use as a context manager."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self._console = Console(stderr=True)
        self._p = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                           TransferSpeedColumn(), console=self._console, transient=False)
        self._total: TaskID | None = None  # rich's TaskID is an int
        self._bytes = 0
        self._layers = 0
        self._t0 = 0.0

    def __enter__(self) -> RichProgress:
        self._t0 = time.monotonic()
        self._p.__enter__()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._p.__exit__(et, e, tb)
        if et is None:
            self._console.print(done_line(self._layers, self._bytes,
                                          time.monotonic() - self._t0))

    def add(self, label: str, total: int) -> object:
        if self._total is None:
            self._total = self._p.add_task("total", total=0)
        self._layers += 1
        self._p.update(self._total, total=(self._p.tasks[self._total].total or 0) + total)
        return self._p.add_task(label, total=total)

    def advance(self, task: object, n: int) -> None:
        assert isinstance(task, int)
        self._p.advance(task, n)  # type: ignore[arg-type]  # a TaskID (NewType of int)
        if self._total is not None:
            self._p.advance(self._total, n)
        self._bytes += n

    def message(self, text: str) -> None:
        self._p.console.print(text)


def done_line(layers: int, nbytes: int, seconds: float) -> str:
    """``done: 5 layers, 107.0 MB in 1.9 s (56.3 MB/s)`` (nothing downloaded: says so)."""
    if not layers:
        return "done: nothing to download (all layers already in the store)"
    speed = nbytes / seconds / 1e6 if seconds > 0 else 0.0
    return (f"done: {layers} layer{'s' if layers != 1 else ''}, {nbytes / 1e6:.1f} MB in "
            f"{seconds:.1f} s ({speed:.1f} MB/s)")


def for_terminal() -> RichProgress | None:
    """A rich progress display when stderr is a terminal, else None (quiet)."""
    return RichProgress() if sys.stderr.isatty() else None
