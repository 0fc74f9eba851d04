"""The sim platform daemon: control socket for the runtime, one device socket per TD.

Protocols (one JSON line each way per connection, then close):

* control (``locations.control_socket()``, mode 0600, peer must be uid 0):
  ``{"op": "register", "td_id", "descriptor", "init_data"}`` (init-data base64 or null),
  ``{"op": "unregister", "td_id"}``, ``{"op": "list"}``, ``{"op": "ping"}``, ``{"op": "stop"}``,
  and ``{"op": "create"|"create-done"|"start"|"delete"|..., ...}``: a step of an
  ``arca-runtime`` call for the C front end (:mod:`arca.host.runtime.fastcreate`).
* device (``<run>/td/<id>/sim.sock``, contract §4): ``{"report_data": "<128 hex>"}`` →
  ``{"evidence": "<base64>"}`` or ``{"error": "..."}``. The socket a request arrives on decides
  which TD the report is about; nothing in the request can name another TD.

Serving model — no TD, and no slow control request, can make another TD wait for its report:

* The **main thread** owns the selector. It accepts device connections and reads their one
  request line without blocking, so an idle connection costs a file descriptor and a slot but
  never a thread; it must deliver that line within ``REQUEST_LINE_TIMEOUT_S`` of being
  accepted. A complete line goes to a short-lived report thread (sign, answer, close). Only the
  main thread changes the selector: registrations queue their listener changes and wake it.
* One **control thread** accepts control requests and serves each in a thread of its own (at
  most ``MAX_CONCURRENT_CONTROL`` at once): a long ``create`` (hashing a big rootfs on first
  use) delays neither a device request nor the create of another container (issue 13, item
  15; ``ARCA_SIMTEE_CONTROL_CONCURRENCY=1`` serves one at a time, as before). Requests
  naming the same container (create and the steps after its runc, the end of a delete,
  register, unregister) are served one at a time, in order (:class:`_KeyedLocks`). A create
  runs with the caller's ``ARCA_*`` environment and umask, which are process-wide: creates
  asking for the same ones share them (installed by the first, restored by the last), a create
  asking for others waits until those have finished, and later ones wait behind it
  (:class:`_ProcessSettings`). Nothing else in the daemon reads the environment (a TD's socket
  path is fixed when it is registered).
* **Slots** (:class:`Slots`): every registered TD has ``RESERVED_REQUESTS_PER_TD`` concurrent
  connections no other TD can take (what its agent and ``arca-evidence`` need); beyond those it
  draws on a shared pool of ``MAX_CONCURRENT_REQUESTS``, up to ``MAX_REQUESTS_PER_TD`` in all.
  A connection over the limit is closed at once; refusals are logged once per TD per burst
  (until that TD's requests in flight drained to zero). So TDs holding idle connections, even
  many compromised ones, can take the shared pool but never an honest TD's reserved slots.

Only one daemon runs per run directory (``fcntl.flock`` on the lock file, held for life).
Registrations are persisted, so a restarted daemon serves already-running TDs again.
What it does not do: decide anything about policy, or protect TDs from the host; bound the
number of TDs (root registers them; each costs a listener and up to its reserved slots).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import logging
import os
import pathlib
import resource
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from arca._internal.environ import restore_environ, swap_environ
from arca.host.runtime.state import validate_id, write_atomic
from arca.host.simtee import locations
from arca.host.simtee.devicepeer import Peers
from arca.host.simtee.platform import Platform, init_data_hash, load_platform
from arca.host.simtee.platform import evidence_bytes as platform_evidence_bytes
from arca.wire.descriptor import LaunchDescriptor
from arca.wire.errors import ArcaError, InvalidInput
from arca.wire.simreport import REPORT_DATA_SIZE

log = logging.getLogger("arca.simtee")

#: A request line is ~150 bytes; anything longer than this is not a request.
MAX_REQUEST_BYTES = 4096
#: Control requests carry a launch descriptor and init-data (bounded by the runtime's limits).
MAX_CONTROL_BYTES = 1024 * 1024
#: A device client sends its one small line right after connecting (the agent does); a
#: connection that says nothing for this long gives its slot back.
REQUEST_LINE_TIMEOUT_S = 2.0
#: Sending the answer to a client that does not read (evidence is a few KiB: it normally fits
#: the socket buffer at once).
DEVICE_TIMEOUT_S = 5.0
CONTROL_TIMEOUT_S = 5.0
#: Device connections each TD may hold whatever the other TDs do: an agent plus an
#: ``arca-evidence`` in the workload.
RESERVED_REQUESTS_PER_TD = 2
#: The pool TDs share for connections beyond their reserved ones; more are closed at once (a
#: TD flooding its own socket must not exhaust the daemon's descriptors and threads).
MAX_CONCURRENT_REQUESTS = 64
#: ... and all of one TD's connections, reserved and shared, so one TD cannot take the pool.
MAX_REQUESTS_PER_TD = 16
#: After a device ``accept`` failed for want of descriptors or memory, the main loop pauses
#: this long rather than spin on the still-readable listener.
ACCEPT_ERROR_PAUSE_S = 0.05
#: At shutdown, how long to wait for the control requests being served (creates) to finish.
CONTROL_JOIN_S = 30.0
#: Control requests served at once; beyond this the control thread waits for one to finish
#: before it accepts the next (the control socket is root's: this bounds threads, not abuse).
#: ``ARCA_SIMTEE_CONTROL_CONCURRENCY`` overrides it (1: one at a time, as before issue 13
#: item 15; ``bench/startup/parallel_create.py`` measures both).
MAX_CONCURRENT_CONTROL = 16
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


def control_concurrency() -> int:
    raw = os.environ.get("ARCA_SIMTEE_CONTROL_CONCURRENCY", "")
    try:
        return max(1, int(raw)) if raw else MAX_CONCURRENT_CONTROL
    except ValueError:
        return MAX_CONCURRENT_CONTROL


class AlreadyRunning(ArcaError):
    pass


@dataclass(eq=False)
class Registration:
    td_id: str
    descriptor: LaunchDescriptor
    init_data: bytes | None
    listener: socket.socket
    path: pathlib.Path
    #: Device connections accepted and not yet closed; refusals in the current burst. Both
    #: only change under the :class:`Slots` lock.
    in_flight: int = 0
    refused: int = 0
    #: A ``vm`` TD: what QEMU is handed (arca.host.backends.vm.launch.Launch as JSON) and the
    #: measurement the platform computed from those very files and command line.
    launch: dict[str, Any] | None = None
    launch_measurement: bytes | None = None

    def measurement_hex(self) -> str:
        if self.launch_measurement is not None:
            return self.launch_measurement.hex()
        return self.descriptor.measurement().hex()

    def record(self) -> dict[str, Any]:
        return {
            "td_id": self.td_id,
            "descriptor": self.descriptor.to_json(),
            "init_data": base64.b64encode(self.init_data).decode() if self.init_data else None,
            "launch": self.launch,
        }


class Slots:
    """Admission of device connections: each TD has ``reserved`` connections of its own; beyond
    them it draws on a pool of ``shared``, up to ``per_td`` in all. So a TD with fewer than
    ``reserved`` connections in flight is always admitted, whatever the other TDs hold.
    Thread-safe (the main thread acquires, report threads release)."""

    def __init__(self, shared: int, reserved: int, per_td: int) -> None:
        if not (shared >= 0 and 0 <= reserved <= per_td):
            raise ValueError(f"bad slot limits: shared {shared}, reserved {reserved}, "
                             f"per TD {per_td}")
        self.shared, self.reserved, self.per_td = shared, reserved, per_td
        self.shared_in_use = 0
        self._lock = threading.Lock()

    def acquire(self, reg: Registration) -> tuple[bool, int]:
        """(admitted, refusals of ``reg`` in the current burst, this one included)."""
        with self._lock:
            n = reg.in_flight
            if n >= self.reserved:
                if n >= self.per_td or self.shared_in_use >= self.shared:
                    reg.refused += 1
                    return False, reg.refused
                self.shared_in_use += 1
            reg.in_flight = n + 1
            return True, reg.refused

    def release(self, reg: Registration) -> int:
        """Give one of ``reg``'s slots back; the refusals of a burst that ended with it (when
        ``reg`` has nothing in flight any more), else 0."""
        with self._lock:
            reg.in_flight -= 1
            if reg.in_flight >= self.reserved:  # that connection held a shared slot
                self.shared_in_use -= 1
            if reg.in_flight or not reg.refused:
                return 0
            ended, reg.refused = reg.refused, 0
            return ended


class _KeyedLocks:
    """One lock per key (a container id), made on first use and dropped after the last."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[str, list[Any]] = {}  # key -> [lock, users]

    @contextlib.contextmanager
    def holding(self, key: str | None) -> Iterator[None]:
        if key is None:
            yield
            return
        with self._lock:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        entry[0].acquire()
        try:
            yield
        finally:
            entry[0].release()
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]


class _ProcessSettings:
    """The process-wide settings a create runs under (``keys`` of ``os.environ`` and the
    umask): installed by the first of the creates that ask for the same ones, restored by the
    last. A create asking for other settings waits until those creates have finished; creates
    arriving after it wait behind it, so it is not starved. Entry is in arrival order."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self._cond = threading.Condition()
        self._current: tuple[object, ...] | None = None
        self._users = 0
        self._queue: list[tuple[object, tuple[object, ...]]] = []
        self._saved: tuple[dict[str, str | None], int] | None = None

    def _may_enter(self, ticket: object, key: tuple[object, ...]) -> bool:
        if self._users and key != self._current:
            return False
        for t, k in self._queue:  # everyone ahead must be able to enter with us
            if t is ticket:
                return True
            if k != key:
                return False
        return False  # not queued: cannot happen

    @contextlib.contextmanager
    def holding(self, env: dict[str, str], umask: int) -> Iterator[None]:
        key = (tuple(sorted(env.items())), umask)
        ticket = object()
        with self._cond:
            self._queue.append((ticket, key))
            while not self._may_enter(ticket, key):
                self._cond.wait()
            self._queue.remove((ticket, key))
            if self._users == 0:
                old_umask = os.umask(umask)
                self._saved = (swap_environ(self.keys, env), old_umask)
                self._current = key
            self._users += 1
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                if self._users == 0:
                    assert self._saved is not None
                    saved, old_umask = self._saved
                    os.umask(old_umask)
                    restore_environ(saved)
                    self._current = self._saved = None
                self._cond.notify_all()


@dataclass(eq=False)
class _Pending:
    """A device connection whose request line has not fully arrived (main thread only)."""

    conn: socket.socket
    reg: Registration
    deadline: float
    buf: bytearray = field(default_factory=bytearray)


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
        return False  # the peer went away (or, non-blocking, does not read); nothing to tell it
    return True


def _peer(conn: socket.socket) -> tuple[int, int, int]:
    pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                        struct.calcsize("3i")))
    return pid, uid, gid


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except OSError:  # BlockingIOError: drained
        pass


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
        #: Changed only by the main thread once :meth:`run` started (see module docstring).
        self.sel = selectors.DefaultSelector()
        self.tds: dict[str, Registration] = {}
        self.slots = Slots(MAX_CONCURRENT_REQUESTS, RESERVED_REQUESTS_PER_TD,
                           MAX_REQUESTS_PER_TD)
        self.stopping = False
        self.control: socket.socket | None = None
        #: Short critical sections only: ``tds``, queued listener changes, control activity.
        self.lock = threading.Lock()
        #: Held for a whole register/unregister (socket bind, files), so two of them for the
        #: same TD can never interleave, whoever calls them.
        self._registry_lock = threading.Lock()
        self._listener_changes: list[tuple[bool, Registration]] = []
        self._pending: set[_Pending] = set()  # main thread only
        self.peers = Peers()
        self._accept_error: OSError | None = None  # main thread only
        self._accept_error_logged = -1e9
        self._wake_w: socket.socket | None = None
        self._control_active = 0  # control requests being served (under ``lock``)
        self._control_done = time.monotonic()
        self._control_slots = threading.BoundedSemaphore(control_concurrency())
        self._control_threads: set[threading.Thread] = set()  # under ``lock``
        self._per_td = _KeyedLocks()
        from arca.host.runtime.fastcreate import ENV_KEYS

        self._settings = _ProcessSettings(ENV_KEYS)
        # The runtime's create, served for the C front end (ADR 0003): import it all now, so
        # the first create pays no imports either.
        from arca.host import backends, guestruntime, treedigest  # noqa: F401
        from arca.host.runtime import bundle, execpolicy, fastcreate  # noqa: F401

        for name in backends.names():  # each backend's module too
            backends.get(name)

        self.code_stamp = fastcreate.code_stamp()

    # -- TD registrations (control thread; before run() also the main thread) -----------------

    def _listen(self, td_id: str) -> tuple[socket.socket, pathlib.Path]:
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
        try:
            # Bind through a directory fd: ``<run>/td/<64-hex id>/sim.sock`` can exceed the 107
            # bytes of ``sun_path``; ``/proc/self/fd/N/sim.sock`` never does.
            dfd = os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                s.bind(f"/proc/self/fd/{dfd}/{path.name}")
            finally:
                os.close(dfd)
            # Inside the TD the workload (after the agent dropped privileges) may ask for
            # reports too; outside, the run directory is root-only.
            os.chmod(path, 0o666)  # noqa: S103
            s.listen(16)
            s.setblocking(False)
        except OSError as e:  # nothing of a half-made socket stays behind
            s.close()
            path.unlink(missing_ok=True)
            raise InvalidInput(f"cannot create the TD device socket {path}: {e.strerror}"
                               ) from None
        return s, path

    def register(self, td_id: str, descriptor: LaunchDescriptor, init_data: bytes | None,
                 *, persist: bool = True, launch: dict[str, Any] | None = None) -> Registration:
        validate_id(td_id)
        measured = None
        if launch is not None:
            # The platform measures the VM itself, from the files and command line QEMU is
            # handed (the stand-in for a PSP measuring pages as they are loaded): the runtime
            # cannot make it sign a measurement of something else (ADR 0016).
            from arca.host import backends

            try:
                # Only a backend that launches VMs has it (base Backend: no such method).
                measure = getattr(backends.get(descriptor.tee), "platform_measurement", None)
                if measure is None:
                    raise ValueError(f"TEE {descriptor.tee} has no launch to measure")
                measured = measure(launch)
            except (OSError, KeyError, TypeError, ValueError, AttributeError) as e:
                raise InvalidInput(f"cannot measure the launch of VM {td_id}: {e}") from None
        with self._registry_lock:
            if td_id in self.tds:
                raise InvalidInput(f"TD {td_id} is already registered")
            init_data_hash(init_data)  # refuse bad init-data now, not at the first report
            if persist:  # a new TD: no binding left by an earlier one of the same id
                self.peers.forget(td_id)
            reg = Registration(td_id, descriptor, init_data, *self._listen(td_id),
                               launch=launch, launch_measurement=measured)
            with self.lock:
                self.tds[td_id] = reg
                self._listener_changes.append((True, reg))
            self._wake()
            if persist:
                locations.registrations_dir().mkdir(mode=0o700, parents=True, exist_ok=True)
                write_atomic(locations.registrations_dir() / f"{td_id}.json",
                             json.dumps(reg.record()).encode())
        log.info("registered TD %s measurement %s", td_id, reg.measurement_hex())
        return reg

    def unregister(self, td_id: str) -> bool:
        validate_id(td_id)
        with self._registry_lock:
            with self.lock:
                reg = self.tds.pop(td_id, None)
                if reg is not None:
                    self._listener_changes.append((False, reg))
            if reg is not None:
                # Unlinked now: nobody connects to it any more. The main thread closes it.
                reg.path.unlink(missing_ok=True)
                self._wake()
            try:
                (locations.registrations_dir() / f"{td_id}.json").unlink()
            except FileNotFoundError:
                pass
            self.peers.forget(td_id)
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
                              persist=False, launch=rec.get("launch"))
            except (ArcaError, ValueError, KeyError, TypeError, OSError) as e:
                log.error("dropping unreadable registration %s: %s", f.name, e)
                f.unlink(missing_ok=True)

    def _wake(self) -> None:
        w = self._wake_w
        if w is not None:
            try:
                w.send(b"\0")
            except OSError:  # BlockingIOError: a wake-up is pending already
                pass

    # -- control requests (control thread) --------------------------------------------------

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
            if not _send(conn, answer) and answer.get("then") == "create-done":
                # The front end died (kill -9) before it heard the answer: nobody will run runc
                # or undo this create, and its `delete --force` may already have come and gone.
                self._fastcreate({**req, "op": "create-done", "rc": 1})
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
            launch = req.get("launch")
            if launch is not None and not isinstance(launch, dict):
                raise InvalidInput("register: launch must be a JSON object")
            td_id = str(req["td_id"])
            with self._per_td.holding(td_id):
                reg = self.register(td_id, LaunchDescriptor.from_json(req["descriptor"]), init,
                                    launch=launch)
            return {"ok": True, "socket": str(reg.path), "measurement": reg.measurement_hex()}
        from arca.host.runtime.fastcreate import STEPS

        if op in STEPS:  # a step of an arca-runtime call for the C front end
            return self._fastcreate(req)
        if op == "unregister":
            td_id = str(req["td_id"])
            with self._per_td.holding(td_id):
                return {"ok": True, "was_registered": self.unregister(td_id)}
        if op == "list":
            with self.lock:
                regs = list(self.tds.values())
            return {"ok": True, "tds": [
                {"td_id": r.td_id, "measurement": r.measurement_hex()} for r in regs]}
        if op == "stop":
            self.stopping = True  # the control loop wakes the main thread once this is answered
            return {"ok": True}
        raise InvalidInput(f"unknown control op {op!r}")

    def _fastcreate(self, req: dict[str, Any]) -> dict[str, Any]:
        """A step of an ``arca-runtime`` call for the C front end (create, delete, start, ...),
        under the container's lock when it changes its files (``fastcreate.LOCKED_STEPS``) and
        with the request's environment and umask installed (see module docstring)."""
        from arca.host.runtime import fastcreate

        with self._per_td.holding(fastcreate.container_id(req)):
            return fastcreate.handle(req, self, self.code_stamp, settings=self._settings.holding)

    def _serve_control(self, conn: socket.socket) -> None:
        try:
            self.handle_control(conn)
        except Exception:  # noqa: BLE001 - one request's failure must not end control
            log.exception("control request failed")
        finally:
            with self.lock:
                self._control_active -= 1
                self._control_done = time.monotonic()
                self._control_threads.discard(threading.current_thread())
            self._control_slots.release()
            if self.stopping:  # "stop" was answered: the main thread ends control and itself
                self._wake()

    def _control_loop(self, ctl: socket.socket, wake: socket.socket) -> None:
        """Accept control requests until the daemon stops, each served in its own thread."""
        sel = selectors.DefaultSelector()
        sel.register(ctl, selectors.EVENT_READ)
        sel.register(wake, selectors.EVENT_READ)
        try:
            while not self.stopping:  # set by "stop" (answered by now) or the main thread
                ready = {key.fileobj for key, _ in sel.select()}
                if wake in ready:
                    _drain(wake)
                if ctl not in ready:
                    continue
                self._control_slots.acquire()  # at most MAX_CONCURRENT_CONTROL in flight
                with self.lock:
                    # Checked under the lock the main thread decides an idle exit under: a
                    # request is either seen as activity or not accepted at all.
                    if self.stopping:
                        self._control_slots.release()
                        return
                    self._control_active += 1
                try:
                    conn, _ = ctl.accept()
                except OSError as e:
                    with self.lock:
                        self._control_active -= 1
                        self._control_done = time.monotonic()
                    self._control_slots.release()
                    if not isinstance(e, BlockingIOError):
                        log.warning("cannot accept a control connection: %s", e)
                        time.sleep(0.1)  # e.g. out of descriptors: do not spin on it
                    continue
                worker = threading.Thread(target=self._serve_control, args=(conn,),
                                          name="simtee-control-request", daemon=True)
                with self.lock:
                    self._control_threads.add(worker)
                try:
                    worker.start()
                except RuntimeError:  # no thread to be had: serve it here
                    self._serve_control(conn)
        finally:
            sel.close()
            # Whatever ended this loop ("stop", or a failure of the loop itself) ends the
            # daemon: a daemon that serves devices but no control would never be replaced.
            self.stopping = True
            self._wake()

    # -- device requests (main thread; report threads) ------------------------------------

    def _apply_listener_changes(self) -> None:
        with self.lock:
            changes, self._listener_changes = self._listener_changes, []
        for add, reg in changes:
            if add:
                self.sel.register(reg.listener, selectors.EVENT_READ, ("td", reg))
            else:
                self._close_listener(reg)

    def _close_listener(self, reg: Registration) -> None:
        try:
            self.sel.unregister(reg.listener)
        except (KeyError, ValueError):
            pass
        reg.listener.close()

    def _accept(self, listener: socket.socket, reg: Registration, now: float) -> None:
        # One connection per listener and round: TDs with connections waiting take turns.
        try:
            conn, _ = listener.accept()
        except BlockingIOError:  # none waiting any more
            return
        except OSError as e:  # out of descriptors or memory: the listener stays readable
            self._accept_error = e
            return
        with self.lock:
            current = self.tds.get(reg.td_id) is reg
        if not current:  # unregistered since this round's select
            conn.close()
            return
        admitted, refused = self.slots.acquire(reg)
        if not admitted:
            conn.close()
            if refused == 1:
                log.warning("TD %s has %d device connections open: refusing more until they "
                            "are done (logged once per burst)", reg.td_id, reg.in_flight)
            return
        conn.setblocking(False)
        p = _Pending(conn, reg, now + REQUEST_LINE_TIMEOUT_S)
        self._pending.add(p)
        self.sel.register(conn, selectors.EVENT_READ, ("request", p))

    def _read_request(self, p: _Pending) -> None:
        try:
            chunk = p.conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self._drop(p)
            return
        p.buf += chunk
        if chunk and b"\n" not in chunk and len(p.buf) <= MAX_REQUEST_BYTES:
            return  # more to come
        self._pending.discard(p)
        self.sel.unregister(p.conn)
        line = bytes(p.buf.split(b"\n", 1)[0])
        try:
            threading.Thread(target=self.handle_device, args=(p.conn, p.reg, line),
                             daemon=True).start()
        except RuntimeError:  # no thread to be had: the client may ask again
            self._release(p.reg)
            p.conn.close()

    def _expire(self, now: float) -> None:
        for p in [p for p in self._pending if p.deadline <= now]:
            _send(p.conn, {"error": f"no request within {REQUEST_LINE_TIMEOUT_S:g}s"})
            self._drop(p)

    def _drop(self, p: _Pending) -> None:
        self._pending.discard(p)
        try:
            self.sel.unregister(p.conn)
        except (KeyError, ValueError):
            pass
        self._release(p.reg)
        p.conn.close()

    def _release(self, reg: Registration) -> None:
        refused = self.slots.release(reg)
        if refused:
            log.warning("TD %s: %d device connections were refused in that burst", reg.td_id,
                        refused)

    def handle_device(self, conn: socket.socket, reg: Registration, line: bytes) -> None:
        try:
            conn.settimeout(DEVICE_TIMEOUT_S)
            pid, uid, _ = _peer(conn)
            self.peers.check(reg.td_id, pid)  # only the TD's own processes (devicepeer)
            if len(line) > MAX_REQUEST_BYTES:
                raise InvalidInput(f"request exceeds {MAX_REQUEST_BYTES} bytes")
            report_data = parse_device_request(line)
            ev = self.platform.sign_report(reg.descriptor, reg.init_data, report_data, reg.td_id,
                                           reg.launch_measurement)
            _send(conn, {"evidence": base64.b64encode(platform_evidence_bytes(ev)).decode()})
            log.info("report for TD %s to pid %d uid %d", reg.td_id, pid, uid)
        except ArcaError as e:
            _send(conn, {"error": str(e)})
        except OSError as e:
            log.warning("device request of TD %s failed: %s", reg.td_id, e)
        finally:
            # The slot first: a client that saw the close and asks again must find it free.
            self._release(reg)
            conn.close()

    def _select_timeout(self, now: float, idle_exit: float) -> float | None:
        timeout = min(idle_exit, 60.0) if idle_exit else None
        if self._pending:
            first = max(0.0, min(p.deadline for p in self._pending) - now)
            timeout = first if timeout is None else min(timeout, first)
        return timeout

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
        wake_r, wake_w = socket.socketpair()
        ctl_wake_r, ctl_wake_w = socket.socketpair()
        for s in (wake_r, wake_w, ctl_wake_r, ctl_wake_w):
            s.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.sel.register(wake_r, selectors.EVENT_READ, ("wake", None))
        self._wake_w = wake_w
        control = threading.Thread(target=self._control_loop, args=(ctl, ctl_wake_r),
                                   name="simtee-control", daemon=True)
        control.start()
        log.info("sim platform %s serving (pid %d)", self.platform.platform_id, os.getpid())
        idle_exit = idle_exit_seconds()
        idle_since = time.monotonic()
        try:
            while not self.stopping:
                self._apply_listener_changes()
                events = self.sel.select(self._select_timeout(time.monotonic(), idle_exit))
                now = time.monotonic()
                for key, _ in events:
                    kind, obj = key.data
                    if kind == "wake":
                        _drain(wake_r)
                    elif kind == "td":
                        self._accept(key.fileobj, obj, now)  # type: ignore[arg-type]
                    else:
                        self._read_request(obj)
                self._expire(now)
                if self._accept_error is not None:
                    # The failing listeners are readable again at once: pause instead of
                    # spinning on them (pending requests are served meanwhile by their threads).
                    if now - self._accept_error_logged > 10:
                        log.warning("cannot accept device connections: %s", self._accept_error)
                        self._accept_error_logged = now
                    self._accept_error = None
                    time.sleep(ACCEPT_ERROR_PAUSE_S)
                with self.lock:
                    if self.tds or self._control_active:
                        idle_since = now
                    idle_since = max(idle_since, self._control_done)
                    if idle_exit and not self._pending and now - idle_since >= idle_exit:
                        log.info("no TD registered for %.0fs: exiting", idle_exit)
                        self.stopping = True
        finally:
            self.stopping = True
            try:
                ctl_wake_w.send(b"\0")
            except OSError:
                pass
            deadline = time.monotonic() + CONTROL_JOIN_S
            control.join(CONTROL_JOIN_S)
            with self.lock:
                workers = list(self._control_threads)
            for w in workers:  # creates in flight finish (or time out) before TDs go away
                w.join(max(0.0, deadline - time.monotonic()))
            self._apply_listener_changes()
            for p in list(self._pending):
                self._drop(p)
            with self.lock:
                regs = list(self.tds.values())
            for reg in regs:
                self._close_listener(reg)
                reg.path.unlink(missing_ok=True)
            signal.set_wakeup_fd(-1)
            self._wake_w = None
            for s in (wake_r, wake_w, ctl_wake_r, ctl_wake_w):
                s.close()
            ctl.close()
            path.unlink(missing_ok=True)
            log.info("sim platform stopped")

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True


def _raise_fd_limit() -> None:
    """Each TD costs a listener plus its reserved connections: lift the soft descriptor limit
    (1024 by default) to the hard one, so the number of TDs is not capped at a few hundred."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            log.warning("cannot raise the file descriptor limit to %d: %s", hard, e)


def serve() -> int:
    """Run the daemon in the foreground until stopped. Returns 0, also when one already runs."""
    from arca._internal.fsutil import secure_state_dirs
    from arca.host import paths

    secure_state_dirs(paths.root_dir(), paths.run_dir())  # root-only state (issue 13, item 12)
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
        _raise_fd_limit()
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
