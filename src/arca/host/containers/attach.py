"""``arca attach``: a detached container's output, from now until it exits, and its exit code;
its stdin too if it was started with ``-d -i``.

There is no daemon holding the container's stdio: its monitor writes everything (stdout and
stderr interleaved, or its terminal with ``-t``) to the container's log, so attaching is
following that log from its current end, as ``podman attach`` shows what comes after it
attached. Signals the attached ``arca`` gets (Ctrl-C, SIGTERM) are passed on to the container
through the runtime, as podman's ``--sig-proxy`` does (a TD's agent relays them like runc).
When this run of the container ends (it exits, or its restart policy has already started the
next run), attach ends with its exit code.

Stdin (``run -d -i``): the monitor keeps the container's stdin (a pipe; with ``-t`` copied to
its terminal) open and serves a root-only unix socket in ``ARCA_RUN``; an attached ``arca``
sends its stdin there. One client's input at a time; its end of input is not the container's
(another attach may follow, as podman keeps ``-i`` stdin open). On a terminal with ``-t``, the
user's terminal goes raw and Ctrl-P Ctrl-Q detaches (podman's default keys), leaving the
container running.
"""

from __future__ import annotations

import os
import time

from arca.errors import NotFound, StateError
from arca.host.containers import spawn
from arca.host.containers.engine import Engine, runtime_argv, runtime_env

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

POLL_S = 0.05
#: podman's default detach keys: Ctrl-P, Ctrl-Q.
DETACH_KEYS = b"\x10\x11"


def socket_path(cid: str) -> str:
    from arca.host.containers.state import run_dir

    return os.path.join(run_dir(), f"attach-{cid[:16]}.sock")  # short: sun_path's limit


def serve_stdin(cid: str, stdin_w: int) -> str:
    """In the monitor: accept attach clients one after another on the container's socket and
    copy what each sends to ``stdin_w`` (a thread; it ends with the monitor). The path."""
    import socket
    import threading

    path = socket_path(cid)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o600)
    srv.listen(4)

    def loop() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                try:
                    while data := conn.recv(65536):
                        _write_all(stdin_w, data)
                except OSError:
                    continue  # that client went away; the next one may come

    threading.Thread(target=loop, name="arca-attach-stdin", daemon=True).start()
    return path


class _StdinSender:
    """The attached side: our stdin to the container's socket, in a thread; ``detached`` once
    the detach keys were typed (on a terminal)."""

    def __init__(self, cid: str, keys: bool) -> None:
        import socket
        import threading

        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(socket_path(cid))
        except OSError as e:
            self.sock.close()
            raise StateError(f"cannot attach stdin: {e.strerror} (its monitor is gone?)"
                             ) from None
        self.keys = keys
        self.detached = threading.Event()
        threading.Thread(target=self._run, name="arca-attach-send", daemon=True).start()

    def _run(self) -> None:
        held = b""  # a Ctrl-P waiting to see whether Ctrl-Q follows
        try:
            while data := os.read(0, 65536):
                if self.keys:
                    data = held + data
                    if DETACH_KEYS in data:
                        self.sock.sendall(data[:data.index(DETACH_KEYS)])
                        self.detached.set()
                        return
                    held = data[-1:] if data.endswith(DETACH_KEYS[:1]) else b""
                    data = data[:len(data) - len(held)]
                self.sock.sendall(data)
        except OSError:
            pass
        finally:
            self.sock.close()  # our end of input: the container's stdin stays open


def attach(engine: Engine, ref: str, out_fd: int = 1, *, sig_proxy: bool = True,
           stdin: bool = True) -> int:
    import signal  # here, not for serve_stdin (arca run -d -i): its enums cost ~3 ms

    rec = engine.store.find(ref)
    if not rec.is_alive():
        raise StateError(f"container {rec.name} is not running: arca attach needs a running "
                         "container (arca logs shows what it printed)")
    proxied = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    old: dict[int, Any] = {}
    if sig_proxy:
        def relay(sig: int, _frame: object) -> None:
            spawn.run([*runtime_argv(), "kill", rec.id, str(sig)], env=runtime_env(rec.tee),
                      quiet=True)

        old = {s: signal.signal(s, relay) for s in proxied}
    f = None
    raw = None
    try:
        # Order: signals relayed, then the log's end taken, then our input sent, so neither
        # an early Ctrl-C nor the answer to our first line is lost.
        f = open(engine.log_path(rec.id), "rb")  # noqa: SIM115 - closed below
        f.seek(0, os.SEEK_END)
        sender = None
        if stdin and rec.interactive and rec.detached:
            from arca.host.containers import terminal

            keys = rec.tty and terminal.local_terminal() is not None and os.isatty(0)
            if keys:
                raw = terminal.RawMode(0)
                raw.__enter__()
            sender = _StdinSender(rec.id, keys)
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
            if sender is not None and sender.detached.is_set():
                return 0  # Ctrl-P Ctrl-Q: it keeps running
            if cur.pid != rec.pid or cur.status != "running" or not cur.is_alive():
                # this run is over: what it wrote last, then its code (once recorded)
                code = _exit_code(engine, rec.id, rec.pid)
                _write_all(out_fd, f.read())
                return code
            time.sleep(POLL_S)
    finally:
        if f is not None:
            f.close()
        for s, h in old.items():
            signal.signal(s, h)
        if raw is not None:
            raw.__exit__(None, None, None)


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
