"""The sim platform daemon: control socket for the runtime, one device socket per TD.

Protocols (one JSON line each way per connection, then close):

* control (``locations.control_socket()``, mode 0600, peer must be uid 0):
  ``{"op": "register", "td_id", "descriptor", "init_data"}`` (init-data base64 or null),
  ``{"op": "unregister", "td_id"}``, ``{"op": "list"}``, ``{"op": "ping"}``, ``{"op": "stop"}``,
  and ``{"op": "create"|"create-undo", ...}``: the runtime's create for the C front end
  (:mod:`arca.host.runtime.fastcreate`).
* device (``<run>/td/<id>/sim.sock``, contract §4): ``{"report_data": "<128 hex>"}`` →
  ``{"evidence": "<base64>"}`` or ``{"error": "..."}``. The socket a request arrives on decides
  which TD the report is about; nothing in the request can name another TD.

Only one daemon runs per run directory (``fcntl.flock`` on the lock file, held for life).
Registrations are persisted, so a restarted daemon serves already-running TDs again.
What it does not do: decide anything about policy, or protect TDs from the host.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from arca.host.runtime.state import validate_id, write_atomic
from arca.host.simtee import locations
from arca.host.simtee.platform import Platform, init_data_hash, load_platform
from arca.wire.descriptor import LaunchDescriptor
from arca.wire.errors import ArcaError, InvalidInput
from arca.wire.simreport import REPORT_DATA_SIZE

log = logging.getLogger("arca.simtee")

#: A request line is ~150 bytes; anything longer than this is not a request.
MAX_REQUEST_BYTES = 4096
#: Control requests carry a launch descriptor and init-data (bounded by the runtime's limits).
MAX_CONTROL_BYTES = 1024 * 1024
#: A TD that connects and then says nothing must not hold a thread for long.
DEVICE_TIMEOUT_S = 5.0
CONTROL_TIMEOUT_S = 5.0
#: Concurrent device requests being served; more are closed at once (a TD flooding its own
#: socket must not exhaust the daemon's threads and starve other TDs for long).
MAX_CONCURRENT_REQUESTS = 64
#: ... and per TD, so that one TD holding idle connections cannot take every slot.
MAX_REQUESTS_PER_TD = 16
#: With no TD registered for this long, the daemon exits (the runtime starts it again on the
#: next create): a forgotten daemon — a test that never stopped it — does not live forever.
#: ``ARCA_SIMTEE_IDLE_EXIT`` overrides it (seconds; 0 = never).
DEFAULT_IDLE_EXIT_S = 600.0
#: A starting daemon waits this long for an exiting predecessor to release the lock.
LOCK_WAIT_S = 5.0


def idle_exit_seconds() -> float:
    raw = os.environ.get("ARCA_SIMTEE_IDLE_EXIT", "")
    try:
        return float(raw) if raw else DEFAULT_IDLE_EXIT_S
    except ValueError:
        return DEFAULT_IDLE_EXIT_S


class AlreadyRunning(ArcaError):
    pass


@dataclass
class Registration:
    td_id: str
    descriptor: LaunchDescriptor
    init_data: bytes | None
    listener: socket.socket
    slots: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(MAX_REQUESTS_PER_TD))

    def record(self) -> dict[str, Any]:
        return {
            "td_id": self.td_id,
            "descriptor": self.descriptor.to_json(),
            "init_data": base64.b64encode(self.init_data).decode() if self.init_data else None,
        }


def _read_line(conn: socket.socket, limit: int) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            raise InvalidInput(f"request exceeds {limit} bytes")
    return bytes(buf.split(b"\n", 1)[0])


def _send(conn: socket.socket, obj: dict[str, Any]) -> bool:
    """Whether ``obj`` reached the peer's socket."""
    try:
        conn.sendall(json.dumps(obj).encode() + b"\n")
    except OSError:
        return False  # the peer went away; nothing to tell it
    return True


def _peer(conn: socket.socket) -> tuple[int, int, int]:
    pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                        struct.calcsize("3i")))
    return pid, uid, gid


def parse_device_request(line: bytes) -> bytes:
    """Report data (64 bytes) from a device request line; ``InvalidInput`` otherwise."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
        raise InvalidInput("request is not JSON") from None
    if not isinstance(obj, dict) or set(obj) != {"report_data"}:
        raise InvalidInput('request must be exactly {"report_data": "<128 hex chars>"}')
    rd = obj["report_data"]
    if (not isinstance(rd, str) or len(rd) != 2 * REPORT_DATA_SIZE
            or any(c not in "0123456789abcdef" for c in rd)):
        raise InvalidInput(f"report_data must be {2 * REPORT_DATA_SIZE} lowercase hex chars")
    return bytes.fromhex(rd)


class Daemon:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.sel = selectors.DefaultSelector()
        self.tds: dict[str, Registration] = {}
        self.slots = threading.BoundedSemaphore(MAX_CONCURRENT_REQUESTS)
        self.stopping = False
        self.control: socket.socket | None = None
        # The runtime's create, served for the C front end (ADR 0003): import it all now, so
        # the first create pays no imports either.
        from arca.host import guestruntime, treedigest  # noqa: F401
        from arca.host.runtime import bundle, execpolicy, fastcreate  # noqa: F401

        self.code_stamp = fastcreate.code_stamp()

    # -- TD registrations -------------------------------------------------------------------

    def _listen(self, td_id: str) -> socket.socket:
        d = locations.device_dir(td_id)
        # <run>/td root-only: a host user reaching a TD's device could attest as that TD.
        d.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(d.parent, 0o700)  # mkdir keeps the mode of a directory an older version made
        d.mkdir(mode=0o755, exist_ok=True)
        path = locations.device_socket(td_id)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bind through a directory fd: ``<run>/td/<64-hex id>/sim.sock`` can exceed the 107
        # bytes of ``sun_path``; ``/proc/self/fd/N/sim.sock`` never does.
        dfd = os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            s.bind(f"/proc/self/fd/{dfd}/{path.name}")
        except OSError as e:
            s.close()
            raise InvalidInput(f"cannot create the TD device socket {path}: {e.strerror}"
                               ) from None
        finally:
            os.close(dfd)
        # Inside the TD the workload (after the agent dropped privileges) may ask for reports
        # too; outside, the run directory is root-only.
        os.chmod(path, 0o666)  # noqa: S103
        s.listen(16)
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ, ("td", td_id))
        return s

    def register(self, td_id: str, descriptor: LaunchDescriptor, init_data: bytes | None,
                 *, persist: bool = True) -> Registration:
        validate_id(td_id)
        if td_id in self.tds:
            raise InvalidInput(f"TD {td_id} is already registered")
        init_data_hash(init_data)  # refuse bad init-data now, not at the first report
        reg = Registration(td_id, descriptor, init_data, self._listen(td_id))
        self.tds[td_id] = reg
        if persist:
            locations.registrations_dir().mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(locations.registrations_dir() / f"{td_id}.json",
                         json.dumps(reg.record()).encode())
        log.info("registered TD %s measurement %s", td_id, descriptor.measurement_hex())
        return reg

    def _close(self, reg: Registration) -> None:
        try:
            self.sel.unregister(reg.listener)
        except (KeyError, ValueError):
            pass
        reg.listener.close()
        try:
            locations.device_socket(reg.td_id).unlink()
        except FileNotFoundError:
            pass

    def unregister(self, td_id: str) -> bool:
        validate_id(td_id)
        reg = self.tds.pop(td_id, None)
        if reg is not None:
            self._close(reg)
        try:
            (locations.registrations_dir() / f"{td_id}.json").unlink()
        except FileNotFoundError:
            pass
        log.info("unregistered TD %s (was registered: %s)", td_id, reg is not None)
        return reg is not None

    def restore(self) -> None:
        d = locations.registrations_dir()
        if not d.is_dir():
            return
        for f in sorted(d.glob("*.json")):
            try:
                rec = json.loads(f.read_bytes())
                td_id = rec["td_id"]
                if not locations.device_dir(td_id).is_dir():
                    f.unlink()  # the container is gone
                    continue
                init = base64.b64decode(rec["init_data"]) if rec["init_data"] else None
                self.register(td_id, LaunchDescriptor.from_json(rec["descriptor"]), init,
                              persist=False)
            except (ArcaError, ValueError, KeyError, TypeError, OSError) as e:
                log.error("dropping unreadable registration %s: %s", f.name, e)
                f.unlink(missing_ok=True)

    # -- requests ---------------------------------------------------------------------------

    def handle_control(self, conn: socket.socket) -> None:
        conn.settimeout(CONTROL_TIMEOUT_S)
        try:
            if _peer(conn)[1] != 0:
                _send(conn, {"error": "the sim platform control socket is for root only"})
                return
            req = json.loads(_read_line(conn, MAX_CONTROL_BYTES))
            if not isinstance(req, dict):
                raise InvalidInput("control request must be a JSON object")
            answer = self._control(req)
            if not _send(conn, answer) and req.get("op") == "create" and \
                    answer.get("create") == "ok":
                # The front end died (kill -9) before it heard the answer: nobody will run runc
                # or undo this create, and its `delete --force` may already have come and gone.
                from arca.host.runtime import fastcreate

                fastcreate.handle({**req, "op": "create-undo"}, self, self.code_stamp)
        except (ArcaError, ValueError, KeyError, TypeError, binascii.Error, RecursionError) as e:
            _send(conn, {"error": str(e) or type(e).__name__})
        except OSError as e:
            log.warning("control request failed: %s", e)
            _send(conn, {"error": f"sim platform I/O error: {e}"})
        finally:
            conn.close()

    def _control(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "register":
            raw = req.get("init_data")
            init = base64.b64decode(raw, validate=True) if raw is not None else None
            reg = self.register(str(req["td_id"]), LaunchDescriptor.from_json(req["descriptor"]),
                                init)
            return {"ok": True, "socket": str(locations.device_socket(reg.td_id)),
                    "measurement": reg.descriptor.measurement_hex()}
        if op in ("create", "create-undo"):
            from arca.host.runtime import fastcreate

            return fastcreate.handle(req, self, self.code_stamp)
        if op == "unregister":
            return {"ok": True, "was_registered": self.unregister(str(req["td_id"]))}
        if op == "list":
            return {"ok": True, "tds": [
                {"td_id": r.td_id, "measurement": r.descriptor.measurement_hex()}
                for r in self.tds.values()]}
        if op == "stop":
            self.stopping = True
            return {"ok": True}
        raise InvalidInput(f"unknown control op {op!r}")

    def handle_device(self, conn: socket.socket, reg: Registration) -> None:
        try:
            conn.settimeout(DEVICE_TIMEOUT_S)
            pid, uid, _ = _peer(conn)
            report_data = parse_device_request(_read_line(conn, MAX_REQUEST_BYTES))
            ev = self.platform.sign_report(reg.descriptor, reg.init_data, report_data, reg.td_id)
            _send(conn, {"evidence": base64.b64encode(ev.to_bytes()).decode()})
            log.info("report for TD %s to pid %d uid %d", reg.td_id, pid, uid)
        except ArcaError as e:
            _send(conn, {"error": str(e)})
        except OSError as e:
            log.warning("device request of TD %s failed: %s", reg.td_id, e)
        finally:
            conn.close()
            reg.slots.release()
            self.slots.release()

    # -- main loop --------------------------------------------------------------------------

    def run(self) -> None:
        path = locations.control_socket()
        path.unlink(missing_ok=True)
        ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            ctl.bind(str(path))
        finally:
            os.umask(old)
        ctl.listen(64)
        ctl.setblocking(False)
        self.control = ctl
        self.sel.register(ctl, selectors.EVENT_READ, ("control", ""))
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.sel.register(wake_r, selectors.EVENT_READ, ("wake", ""))
        log.info("sim platform %s serving (pid %d)", self.platform.platform_id, os.getpid())
        idle_exit = idle_exit_seconds()
        idle_since = time.monotonic()
        try:
            while not self.stopping:
                events = self.sel.select(timeout=min(idle_exit, 60.0) if idle_exit else None)
                if self.tds:
                    idle_since = time.monotonic()
                elif idle_exit and not events and time.monotonic() - idle_since >= idle_exit:
                    log.info("no TD registered for %.0fs: exiting", idle_exit)
                    break
                for key, _ in events:
                    kind, td_id = key.data
                    if kind == "wake":
                        wake_r.recv(512)
                        continue
                    try:
                        conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    except OSError:  # also: listener closed earlier in this same round
                        continue
                    if kind == "control":
                        self.handle_control(conn)
                        idle_since = time.monotonic()
                        continue
                    reg = self.tds.get(td_id)
                    if reg is None or not reg.slots.acquire(blocking=False):
                        conn.close()
                        continue
                    if not self.slots.acquire(blocking=False):
                        reg.slots.release()
                        conn.close()
                        continue
                    threading.Thread(target=self.handle_device, args=(conn, reg),
                                     daemon=True).start()
        finally:
            for reg in list(self.tds.values()):
                self._close(reg)
            ctl.close()
            path.unlink(missing_ok=True)
            log.info("sim platform stopped")

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True


def serve() -> int:
    """Run the daemon in the foreground until stopped. Returns 0, also when one already runs."""
    d = locations.state_dir()
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    lock = open(locations.lock_file(), "a")  # noqa: SIM115 - held for the daemon's lifetime
    if not _acquire(lock):
        log.info("another sim platform daemon already runs for %s", d)
        lock.close()
        return 0
    try:
        write_atomic(locations.pid_file(), f"{os.getpid()}\n".encode(), 0o644)
        daemon = Daemon(load_platform())
        daemon.restore()
        daemon.run()
    finally:
        locations.pid_file().unlink(missing_ok=True)
        lock.close()
    return 0


def _acquire(lock: Any) -> bool:
    """Take the daemon lock. While another daemon holds it and answers, give up at once; if it
    does not answer (it is exiting, idle or stopped), wait for it to let go."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        if _answers() or time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def _answers() -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(locations.control_socket()))
        s.sendall(b'{"op": "ping"}\n')
        return b'"ok"' in s.recv(4096)
    except OSError:
        return False
    finally:
        s.close()
