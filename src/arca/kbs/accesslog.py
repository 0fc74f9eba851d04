"""The KBS access log: one line per request — client, request line, status, latency.

What it logs: the client address, method, path (without the query string, non-printable
characters escaped, cut at 256 characters), HTTP version, status and the time from the end of
the request head to the answer. What it never logs: headers (``Authorization``, cookies),
bodies (evidence, tokens, resources, policies) or query strings — so no secret or token can
reach the log (tested). Logger ``arca.kbs.access`` at INFO; ``--no-access-log`` turns it off.
"""

from __future__ import annotations

import logging
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


def record(client: Any, method: str, path: str, version: str, status: int,
           started: float) -> None:
    """Log one request answered ``time.perf_counter() - started`` seconds after it began."""
    host = client[0] if isinstance(client, (tuple, list)) and client else "-"
    log.info('%s "%s %s HTTP/%s" %d %.1fms', host, method, _clean(path.split("?", 1)[0]),
             version, status, (time.perf_counter() - started) * 1000)


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
