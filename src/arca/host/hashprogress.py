"""Progress of the first hash of an image's root filesystem (issue 15): on a large image it
takes seconds (≈ 2 s per 100 MB here) and, before this, passed in silence.

``arca run`` (for a TD) and ``arca measure`` hash the mounted rootfs themselves when the digest
cache (:func:`arca.host.treedigest.rootfs_digest`) misses, reporting on stderr; the runtime
then finds the digest cached. On a terminal: one line updated in place (done/total MB, speed)
ending with a done line. Elsewhere (a CI log, a pipe), as ``arca pull`` there: whole lines, no
cursor movement — one when the hash has taken :data:`PLAIN_QUIET_SECONDS` (what it hashes, how
much), one every :data:`PLAIN_EVERY` seconds after, and the done line. A hash that ends sooner
shows nothing at all (:data:`QUIET_SECONDS` on a terminal).
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
#: Not a terminal: a log line only for a hash this slow (a log needs no note of a short
#: pause, and a workload's stderr stays its own on small images; ``$ARCA_PROGRESS_AFTER``
#: overrides it too), then a line at most this often.
PLAIN_QUIET_SECONDS = 2.0
PLAIN_EVERY = 5.0


class HashProgress:
    """``progress(done, total)`` for :func:`arca.host.treedigest.tree_digest`: a line on
    ``stream`` (a terminal) rewritten in place; :meth:`finish` ends it."""

    def __init__(self, label: str, stream: TextIO | None = None, *, plain: bool = False
                 ) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.plain = plain
        self.t0 = time.monotonic()
        self.shown = False
        default = PLAIN_QUIET_SECONDS if plain else QUIET_SECONDS
        try:
            quiet = float(os.environ.get(QUIET_ENV, default))
        except ValueError:
            quiet = default
        self._next = self.t0 + quiet
        self._last = (0, 0)

    def __call__(self, done: int, total: int) -> None:
        self._last = (done, total)
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + (PLAIN_EVERY if self.plain else 1 / UPDATES_PER_SECOND)
        self.shown = True
        line = self.line(done, total, now - self.t0)
        self.stream.write(line + "\n" if self.plain else "\r\x1b[K" + line)
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
        start = "" if self.plain else "\r\x1b[K"  # on a terminal: over the progress line
        self.stream.write(f"{start}{self.label}: done, {total / 1e6:.1f} MB in {seconds:.1f} s "
                          f"({total / seconds / 1e6 if seconds else 0:.0f} MB/s)\n")
        self.stream.flush()


def warm_rootfs_digest(rootfs: Path | str, image: str, stream: TextIO | None = None, *,
                       plain: bool = True) -> None:
    """Hash ``rootfs`` into the digest cache with progress on stderr (or ``stream``) if the
    cache misses; otherwise do nothing. ``plain=False``: only on a terminal — for ``arca
    run``'s warm path, where looking at the cache would cost more than the run's own imports
    (hashlib's OpenSSL, ≈ 15 ms) and a run plan says the image ran here before."""
    out = stream or sys.stderr
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):
        return
    if not tty and not plain:
        return
    from pathlib import Path

    from arca.host.treedigest import cached_rootfs_digest, rootfs_digest

    path = Path(rootfs)
    if cached_rootfs_digest(path) is not None:
        return
    bar = HashProgress(f"measuring {image} (first run of this image: hashing its files)", out,
                       plain=not tty)
    try:
        rootfs_digest(path, progress=bar)
    finally:
        bar.finish()
