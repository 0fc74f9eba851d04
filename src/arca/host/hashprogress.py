"""Progress of the first hash of an image's root filesystem (issue 15): on a large image it
takes seconds (≈ 2 s per 100 MB here) and, before this, passed in silence.

``arca run`` (for a TD) and ``arca measure`` hash the mounted rootfs themselves when the digest
cache (:func:`arca.host.treedigest.rootfs_digest`) misses and stderr is a terminal, showing one
line updated in place (done/total MB, speed) and ending with a done line; the runtime then
finds the digest cached. Not a terminal: nothing is printed and nothing is done here (the
runtime hashes as before), as ``arca pull`` prints nothing then. A tree that hashes within
:data:`QUIET_SECONDS` shows nothing at all.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import TextIO

#: Nothing is shown for a hash that ends sooner (``$ARCA_PROGRESS_AFTER`` overrides it).
QUIET_SECONDS = 0.5
QUIET_ENV = "ARCA_PROGRESS_AFTER"
#: At most this many updates of the line per second.
UPDATES_PER_SECOND = 8


class HashProgress:
    """``progress(done, total)`` for :func:`arca.host.treedigest.tree_digest`: a line on
    ``stream`` (a terminal) rewritten in place; :meth:`finish` ends it."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self.shown = False
        try:
            quiet = float(os.environ.get(QUIET_ENV, QUIET_SECONDS))
        except ValueError:
            quiet = QUIET_SECONDS
        self._next = self.t0 + quiet
        self._last = (0, 0)

    def __call__(self, done: int, total: int) -> None:
        self._last = (done, total)
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + 1 / UPDATES_PER_SECOND
        self.shown = True
        self.stream.write("\r\x1b[K" + self.line(done, total, now - self.t0))
        self.stream.flush()

    def line(self, done: int, total: int, seconds: float) -> str:
        speed = done / seconds / 1e6 if seconds > 0 else 0.0
        pct = 100 * done // total if total else 100
        return (f"{self.label}: {done / 1e6:.1f} / {total / 1e6:.1f} MB ({pct}%, "
                f"{speed:.0f} MB/s)")

    def finish(self) -> None:
        if not self.shown:
            return
        done, total = self._last
        seconds = time.monotonic() - self.t0
        self.stream.write(f"\r\x1b[K{self.label}: done, {total / 1e6:.1f} MB in "
                          f"{seconds:.1f} s ({total / seconds / 1e6 if seconds else 0:.0f} "
                          "MB/s)\n")
        self.stream.flush()


def warm_rootfs_digest(rootfs: Path | str, image: str, stream: TextIO | None = None) -> None:
    """Hash ``rootfs`` into the digest cache with progress, if stderr (or ``stream``) is a
    terminal and the cache misses; otherwise do nothing."""
    out = stream or sys.stderr
    try:
        if not out.isatty():
            return
    except (AttributeError, ValueError):
        return
    from pathlib import Path

    from arca.host.treedigest import cached_rootfs_digest, rootfs_digest

    path = Path(rootfs)
    if cached_rootfs_digest(path) is not None:
        return
    bar = HashProgress(f"measuring {image} (first run of this image: hashing its files)", out)
    try:
        rootfs_digest(path, progress=bar)
    finally:
        bar.finish()
