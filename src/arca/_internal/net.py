"""Waiting for a freshly started server: until its TCP port answers (or a readiness probe
passes), its process dies, or a deadline passes.

Used by the demo (the embedded key broker) and by the tests' registry and key-broker fixtures,
so all of them fail the same way: with the process's exit code or the time waited, and the tail
of its log. Not here: starting or stopping the process (the caller owns it).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from arca.wire.errors import ArcaError

#: How much of the server's log an error quotes.
LOG_TAIL = 2000


class ServerDidNotStart(ArcaError, RuntimeError):
    """A server process exited, or did not answer in time, after being started. Also a
    RuntimeError, which is what the test fixtures raised before they shared this helper."""


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until_serving(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str],
    host: str,
    port: int,
    *,
    what: str,
    timeout: float = 30.0,
    log: Path | None = None,
    ready: Callable[[], bool] | None = None,
    interval: float = 0.05,
) -> None:
    """Return once ``host:port`` accepts connections (and ``ready()``, when given, is true);
    raise :class:`ServerDidNotStart` naming ``what`` when ``proc`` exits first or ``timeout``
    seconds pass. ``ready`` is a stricter probe (e.g. an HTTP health check) and should return
    False rather than raise while the server is still starting."""
    deadline = time.monotonic() + timeout
    while True:
        if port_answers(host, port) and (ready is None or ready()):
            return
        code = proc.poll()
        if code is not None:
            problem = f"exited with code {code}"
        elif time.monotonic() > deadline:
            problem = f"did not answer on {host}:{port} within {timeout:g} s"
        else:
            time.sleep(interval)
            continue
        tail = ""
        if log is not None:
            try:
                tail = ": " + log.read_text(errors="replace")[-LOG_TAIL:].strip()
            except OSError:
                pass
        raise ServerDidNotStart(f"{what} {problem}{tail}", what=what, exit_code=code)
