"""Progress display for pulls: rich bars on a terminal; elsewhere (a CI log, a pipe) plain
lines, as podman prints there: one per layer when it has arrived, a running total now and then
on a long pull, and the done line (totals and speed); nothing with ``--quiet``."""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # rich costs ~40 ms to import (more under load): only for a terminal
    from typing import Any, TextIO

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


class PlainProgress:
    """Whole lines on stderr, no cursor movement (use as a context manager): what a log keeps.
    Layers arrive in parallel threads, hence the lock. Messages given before the first layer
    (``pulling NAME``) wait for it: a pull that downloads nothing, or fails before its first
    layer, prints only its done line or its one error line."""

    #: A running total at most this often (seconds), for pulls long enough to need one.
    EVERY = 5.0

    def __init__(self, stream: TextIO | None = None) -> None:
        self._out = stream or sys.stderr
        self._lock = threading.Lock()
        self._tasks: list[list[Any]] = []  # [label, total, done]
        self._pending: list[str] = []
        self._bytes = 0
        self._t0 = 0.0
        self._next = 0.0

    def __enter__(self) -> PlainProgress:
        self._t0 = time.monotonic()
        self._next = self._t0 + self.EVERY
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if et is None:
            self._line(done_line(len(self._tasks), self._bytes, time.monotonic() - self._t0))

    def _line(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()

    def add(self, label: str, total: int) -> object:
        with self._lock:
            for text in self._pending:
                self._line(text)
            self._pending.clear()
            self._tasks.append([label, total, 0])
            return len(self._tasks) - 1

    def advance(self, task: object, n: int) -> None:
        assert isinstance(task, int)
        with self._lock:
            t = self._tasks[task]
            t[2] += n
            self._bytes += n
            if t[2] == t[1]:
                self._line(f"{t[0]}: {t[1] / 1e6:.1f} MB done")
            now = time.monotonic()
            if now >= self._next:
                self._next = now + self.EVERY
                total = sum(x[1] for x in self._tasks)
                speed = self._bytes / (now - self._t0) / 1e6
                self._line(f"pulled {self._bytes / 1e6:.1f} / {total / 1e6:.1f} MB "
                           f"({speed:.1f} MB/s)")

    def message(self, text: str) -> None:
        with self._lock:
            if self._tasks:
                self._line(text)
            else:
                self._pending.append(text)


def for_stderr() -> RichProgress | PlainProgress:
    """Bars on a terminal, plain lines otherwise (a CI log wants the lines, not silence)."""
    return RichProgress() if sys.stderr.isatty() else PlainProgress()
