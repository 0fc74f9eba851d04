"""Progress display for pulls: rich bars on a terminal, nothing otherwise."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)


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
    """Bars on stderr; use as a context manager."""

    def __init__(self) -> None:
        self._console = Console(stderr=True)
        self._p = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                           TransferSpeedColumn(), console=self._console, transient=False)

    def __enter__(self) -> RichProgress:
        self._p.__enter__()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._p.__exit__(et, e, tb)

    def add(self, label: str, total: int) -> object:
        return self._p.add_task(label, total=total)

    def advance(self, task: object, n: int) -> None:
        assert isinstance(task, int)
        self._p.advance(TaskID(task), n)

    def message(self, text: str) -> None:
        self._p.console.print(text)


def for_terminal() -> RichProgress | None:
    """A rich progress display when stderr is a terminal, else None (quiet)."""
    return RichProgress() if sys.stderr.isatty() else None
