"""``arca attach``: a detached container's output, from now until it exits, and its exit code.

There is no daemon holding the container's stdio: its monitor writes everything (stdout and
stderr interleaved, or its terminal with ``-t``) to the container's log, so attaching is
following that log from its current end, as ``podman attach`` shows what comes after it
attached. Signals the attached ``arca`` gets (Ctrl-C, SIGTERM) are passed on to the container
through the runtime, as podman's ``--sig-proxy`` does (a TD's agent relays them like runc).
When this run of the container ends (it exits, or its restart policy has already started the
next run), attach ends with its exit code.
"""

from __future__ import annotations

import os
import time

from arca.errors import NotFound, StateError
from arca.host.containers import spawn
from arca.host.containers.engine import Engine, runtime_argv, runtime_env

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from typing import Any
else:
    import _signal as signal  # signal without its enums: see spawn.py

POLL_S = 0.05


def attach(engine: Engine, ref: str, out_fd: int = 1, *, sig_proxy: bool = True) -> int:
    rec = engine.store.find(ref)
    if not rec.is_alive():
        raise StateError(f"container {rec.name} is not running: arca attach needs a running "
                         "container (arca logs shows what it printed)")
    f = open(engine.log_path(rec.id), "rb")  # noqa: SIM115 - closed below
    f.seek(0, os.SEEK_END)
    proxied = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    old: dict[int, Any] = {}
    if sig_proxy:
        def relay(sig: int, _frame: object) -> None:
            spawn.run([*runtime_argv(), "kill", rec.id, str(sig)], env=runtime_env(rec.tee),
                      quiet=True)

        old = {s: signal.signal(s, relay) for s in proxied}
    try:
        while True:
            chunk = f.read(65536)
            if chunk:
                _write_all(out_fd, chunk)
                continue
            try:
                cur = engine.store.load(rec.id)
            except NotFound:
                _write_all(out_fd, f.read())
                return 0  # a --rm container, removed as it exited (as Engine.wait says)
            if cur.pid != rec.pid or cur.status != "running" or not cur.is_alive():
                # this run is over: what it wrote last, then its code (once recorded)
                code = _exit_code(engine, rec.id, rec.pid)
                _write_all(out_fd, f.read())
                return code
            time.sleep(POLL_S)
    finally:
        f.close()
        for s, h in old.items():
            signal.signal(s, h)


def _exit_code(engine: Engine, cid: str, pid: int, timeout: float = 10.0) -> int:
    """The exit code of the run whose process was ``pid``, once its monitor recorded it (a
    restart already under way: the code it recorded before; unknown: -1, as ``wait``)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            cur = engine.store.load(cid)
        except NotFound:
            return 0
        if cur.status == "exited" and cur.exit_code is not None:
            return cur.exit_code
        if cur.status == "error" or cur.pid != pid or time.monotonic() > deadline:
            return -1 if cur.status == "error" or cur.exit_code is None else cur.exit_code
        time.sleep(POLL_S)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
