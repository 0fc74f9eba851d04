"""The KBS access log: one line per request — client, request line, status, latency.

What it logs: the client address, method, path (without the query string, non-printable
characters escaped, cut at 256 characters), HTTP version, status and the time from the end of
the request head to the answer. What it never logs: headers (``Authorization``, cookies),
bodies (evidence, tokens, resources, policies) or query strings — so no secret or token can
reach the log (tested). Logger ``arca.kbs.access`` at INFO decides whether it is on
(``--no-access-log`` sets it to WARNING).

Lines are written in the format of the other log lines, but not through ``logging``: a
``LogRecord``, its formatting and a locked, flushed write cost 25-75 µs per line here, a sixth
of the server's CPU per session (three requests). They are collected on the event loop and
written to stderr together, at most half a second later (or at 256 lines, or at exit).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import select
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("arca.kbs.access")
#: Longest path written to the log.
MAX_PATH = 256


def _clean(path: str) -> str:
    if path.isprintable() and '"' not in path and len(path) <= MAX_PATH:
        return path
    return "".join(c if c.isprintable() and c not in '"\\' else f"\\x{ord(c):02x}"
                   for c in path[:MAX_PATH])


def enabled() -> bool:
    return log.isEnabledFor(logging.INFO)


#: Lines waiting to be written, the pending flush, and the cached time stamp (second, text).
_lines: list[str] = []
_timer: list[asyncio.TimerHandle] = []
_stamp: list[Any] = [0, ""]
#: Write at most this long after a line was recorded, or once this many lines wait.
FLUSH_SECONDS = 0.5
FLUSH_LINES = 256


def flush() -> None:
    for t in _timer:
        t.cancel()
    _timer.clear()
    if not _lines:
        return
    lines = _lines[:]
    _lines.clear()
    try:
        sys.stderr.flush()  # what logging wrote before, first
        fd = sys.stderr.fileno()
    except (OSError, ValueError, AttributeError):  # no real stderr (closed, captured)
        try:
            sys.stderr.write("".join(lines))
        except (OSError, ValueError):
            pass
        return
    # Whole lines per write, at most PIPE_BUF bytes: workers sharing a pipe never interleave
    # inside a line.
    chunk = b""
    try:
        for line in lines:
            data = line.encode("utf-8", "replace")
            if chunk and len(chunk) + len(data) > select.PIPE_BUF:
                os.write(fd, chunk)
                chunk = b""
            chunk += data
        if chunk:
            os.write(fd, chunk)
    except OSError:  # stderr gone at shutdown: nothing to log to
        pass


def record(client: Any, method: str, path: str, version: str, status: int,
           started: float) -> None:
    """Log one request answered ``time.perf_counter() - started`` seconds after it began."""
    ms = (time.perf_counter() - started) * 1000
    host = client[0] if isinstance(client, (tuple, list)) and client else "-"
    now = time.time()
    second = int(now)
    if _stamp[0] != second:
        _stamp[0], _stamp[1] = second, time.strftime("%Y-%m-%d %H:%M:%S",
                                                     time.localtime(second))
    _lines.append(f'{_stamp[1]},{int(now * 1000) % 1000:03d} {log.name} INFO {host} '
                  f'"{method} {_clean(path.split("?", 1)[0])} HTTP/{version}" {status} '
                  f"{ms:.1f}ms\n")
    if len(_lines) >= FLUSH_LINES:
        flush()
    elif not _timer:
        try:
            _timer.append(asyncio.get_running_loop().call_later(FLUSH_SECONDS, flush))
        except RuntimeError:  # no event loop (a direct call): write now
            flush()


atexit.register(flush)


async def asgi(scope: Any, call: Callable[[Any], Awaitable[None]],
               send: Callable[[Any], Awaitable[None]]) -> None:
    """Run ``call(send')`` for an HTTP ``scope``, logging the status ``send'`` carried."""
    started, status = time.perf_counter(), 0

    async def tracking(message: Any) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    try:
        await call(tracking)
    finally:
        record(scope.get("client"), scope["method"], scope.get("path", ""),
               scope.get("http_version", "1.1"), status or 500, started)
