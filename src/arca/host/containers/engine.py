"""``arca run`` and friends: containers from the image store, driven through ``arca-runtime``.

No daemon. A container's lifecycle is owned by a *supervisor*: the ``arca run`` process itself
in the foreground, or for ``-d`` a small per-container monitor process (like podman's conmon),
forked from the CLI into its own session, that outlives the CLI. The supervisor makes itself a
child subreaper, calls ``arca-runtime create`` (the container's stdio is the supervisor's: the
terminal, or the container's log file), ``start``, waits for the container's init process
(which becomes its child when the runtime exits), records the exit code, and calls
``arca-runtime delete`` (which unregisters a TD). The container's root filesystem is an overlay
of the store's shared layer directories with a private upper directory, mounted before
``create`` and unmounted when the container exits (its changes stay in the upper directory
until ``rm``).

``exec`` goes through ``arca-runtime exec``, so the TD's execution policy applies. Not here:
terminals (``-t``), port mappings or a network namespace (containers use the host network).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arca.host import paths
from arca.host.containers.spec import Volume, build_spec, generated_init_data
from arca.host.containers.state import ContainerRecord, ContainerStore, now
from arca.host.imageconfig import process_from_image
from arca.host.images.ingest import resolve  # its pull/archive imports are deferred: ~1 ms
from arca.host.images.mount import mount_overlay, umount
from arca.host.images.store import ImageStore
from arca.wire.errors import ArcaError, InvalidInput, NotFound, StateError

PR_SET_CHILD_SUBREAPER = 36
#: How long ``run -d`` waits for the monitor to report the container started.
START_TIMEOUT_S = 60.0
#: Default grace period of ``stop`` before SIGKILL (docker's default).
STOP_TIMEOUT_S = 10.0


class ContainerError(ArcaError):
    """The runtime failed to create, start or stop a container."""


@dataclass(frozen=True)
class RunOptions:
    image: str
    command: list[str] = field(default_factory=list)
    name: str | None = None
    detach: bool = False
    auto_remove: bool = False
    env: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    tee: str = "sim"
    kbs_url: str | None = None
    init_data: bytes | None = None


def runtime_argv() -> list[str]:
    """``arca-runtime`` with Arca's own runc state root (so ``arca ps`` sees only its own)."""
    exe = os.environ.get("ARCA_RUNTIME_BIN")
    if not exe:
        sibling = Path(sys.executable).parent / "arca-runtime"
        exe = str(sibling) if sibling.exists() else (shutil.which("arca-runtime") or "")
    if not exe:
        raise ContainerError("arca-runtime is not installed (not next to the Python "
                             "interpreter and not on PATH)")
    return [exe, "--root", str(paths.run_dir() / "runc")]


def _set_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)  # libc is already loaded: no ldconfig lookup
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise ContainerError("prctl(PR_SET_CHILD_SUBREAPER) failed: "
                             f"{os.strerror(ctypes.get_errno())}")


class Engine:
    def __init__(self, images: ImageStore | None = None,
                 containers: ContainerStore | None = None) -> None:
        self.images = images or ImageStore()
        self.store = containers or ContainerStore()

    # -- paths ---------------------------------------------------------------------------------
    def _bundle(self, cid: str) -> Path:
        return self.store.dir(cid) / "bundle"

    def log_path(self, cid: str) -> Path:
        return self.store.dir(cid) / "container.log"

    # -- run -----------------------------------------------------------------------------------
    def prepare(self, opts: RunOptions) -> ContainerRecord:
        """Create the container record, mount its rootfs and write its bundle."""
        if opts.init_data is not None and opts.kbs_url:
            raise InvalidInput("--kbs and --init-data exclude each other: put kbs_url into the "
                               "init-data file (it is measured as given)")
        init_data = opts.init_data
        if opts.kbs_url:
            init_data = generated_init_data(opts.kbs_url)
        if init_data is not None and opts.tee == "none":
            raise InvalidInput("init-data needs a TEE (--tee sim)")
        volumes = [Volume.parse(v) for v in opts.volumes]
        record = resolve(self.images, opts.image)
        config = self.images.config_of(record)
        rec = self.store.create(name=opts.name, image=record.name, image_digest=record.digest,
                                tee=opts.tee, args=(), auto_remove=opts.auto_remove,
                                detached=opts.detach)
        try:
            d = self.store.dir(rec.id)
            bundle = self._bundle(rec.id)
            bundle.mkdir(mode=0o711)
            with self.images.ingesting():
                # --rm: the upper directory is deleted with the container, so it need not
                # survive a host crash, and its unmount need not sync the host's filesystem.
                mount_overlay(bundle / "rootfs", self.images.lowerdirs(record), d / "upper",
                              d / "work", volatile=opts.auto_remove)
            os.chmod(bundle / "rootfs", 0o755)  # noqa: S103 - the container's /
            proc = process_from_image(config, bundle / "rootfs", args=opts.command or None,
                                      env=opts.env)
            spec = build_spec(proc, container_id=rec.id, hostname=rec.id[:12], tee=opts.tee,
                              volumes=volumes, init_data=init_data)
            (bundle / "config.json").write_text(json.dumps(spec, indent=1))
            return self.store.update(rec.id, args=proc.args, process=proc.to_oci())
        except BaseException:
            self._cleanup(rec.id)
            raise

    def run(self, opts: RunOptions) -> tuple[ContainerRecord, int | None]:
        """Foreground: (record, exit code). Detached: (record, None) once it is running."""
        rec = self.prepare(opts)
        if not opts.detach:
            return rec, self.supervise(rec.id, foreground=True)
        monitor, started = self._spawn_monitor(rec.id)
        try:
            return self._await_start(rec, monitor, started)
        finally:
            os.close(started)

    def _await_start(self, rec: ContainerRecord, monitor: int, started: int
                     ) -> tuple[ContainerRecord, None]:
        """Wait until the monitor reports the container running (or failed). ``started`` is
        the read end of a pipe the monitor writes to once the container runs, and which
        closes when the monitor exits: it wakes us at once, instead of a polling interval
        later. The record stays the authority; the pipe only says when to look."""
        deadline = time.monotonic() + START_TIMEOUT_S
        monitor_status: int | None = None
        woken = False
        while time.monotonic() < deadline:
            # checked before loading the record, so a "created" seen below is not stale
            monitor_done = monitor_status is not None or (
                monitor_status := _exited(monitor)) is not None
            try:
                cur = self.store.load(rec.id)
            except NotFound:
                return rec, None  # a --rm container that already ran, exited and was removed
            if cur.status in ("running", "exited"):
                return cur, None
            if cur.status == "error":
                if cur.auto_remove:
                    self.remove(rec.id, force=True)
                raise ContainerError(f"container {rec.name}: {cur.error}")
            if monitor_done:
                raise ContainerError(f"container {rec.name}: its monitor exited "
                                     f"(code {monitor_status}); see {self.log_path(rec.id)}")
            if woken:  # the monitor wrote or exited; its record or exit status is due
                time.sleep(0.01)
            else:
                woken = bool(select.select([started], [], [], 0.25)[0])
        raise ContainerError(f"container {rec.name} did not start within {START_TIMEOUT_S}s")

    def _spawn_monitor(self, cid: str) -> tuple[int, int]:
        """Fork the container's monitor: its own session, stdio on the container's log file.

        A fork, not a new interpreter: the monitor starts with everything already imported,
        which keeps ~0.1 s of interpreter start-up off every ``run -d``. The CLI is
        single-threaded here, so forking is safe. Returns the monitor's pid and the read end
        of its "started" pipe."""
        log = os.open(self.log_path(cid), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                      0o600)
        sys.stdout.flush()
        sys.stderr.flush()
        started_r, started_w = os.pipe()  # not inheritable: only the monitor holds the end
        pid = os.fork()
        if pid:
            os.close(log)
            os.close(started_w)
            return pid, started_r
        code = 1
        try:
            os.close(started_r)
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            self.supervise(cid, foreground=False, started_fd=started_w)
            code = 0
        except ArcaError as e:
            print(f"arca-monitor: error: {e}", file=sys.stderr)
        except BaseException:  # noqa: BLE001 - the monitor must never return into the CLI
            import traceback

            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def supervise(self, cid: str, *, foreground: bool, started_fd: int | None = None) -> int:
        """Create, start and wait for the container; returns its exit code (128+N on signal N).
        Runs in the ``arca run`` process or in the monitor; the monitor passes ``started_fd``,
        written to and closed once the container is recorded running."""
        _set_subreaper()
        rec = self.store.load(cid)
        d = self.store.dir(cid)
        rt = runtime_argv()
        pidfile = d / "pid"
        runtime_log = d / "runtime.log"
        res = subprocess.run([*rt, "--log", str(runtime_log), "--log-format", "json", "create",
                              "--bundle", str(self._bundle(cid)), "--pid-file", str(pidfile),
                              cid], cwd=self._bundle(cid), close_fds=True)
        if res.returncode != 0:
            msg = _last_error(runtime_log) or f"arca-runtime create exited {res.returncode}"
            self._failed(cid, msg, foreground)
            raise ContainerError(f"container {rec.name}: {msg}")
        pid = int(pidfile.read_text().strip())
        # Signals for the container arriving at the supervisor are passed on.
        forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
        old = {s: signal.signal(s, lambda s, _f: _kill(pid, s)) for s in forwarded}
        try:
            start = subprocess.run([*rt, "start", cid], capture_output=True, text=True)
            if start.returncode != 0:
                _kill(pid, signal.SIGKILL)
                _reap(pid)
                self._delete_runtime(cid)
                msg = start.stderr.strip() or f"arca-runtime start exited {start.returncode}"
                self._failed(cid, msg, foreground)
                raise ContainerError(f"container {rec.name}: {msg}")
            self.store.update(cid, status="running", pid=pid, started=now(),
                              monitor_pid=os.getpid())
            if started_fd is not None:
                os.write(started_fd, b"1")
                os.close(started_fd)
            code = _reap(pid)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        try:
            self.store.update(cid, status="exited", exit_code=code, finished=now())
        except NotFound:
            return code  # `arca rm -f` removed it meanwhile and cleaned up
        self._delete_runtime(cid)
        if rec.auto_remove:
            self._cleanup(cid)
        else:
            # No restarts: the rootfs is not needed until `rm` (its changes stay in upper/).
            umount(self._bundle(cid) / "rootfs", lazy=True)
        return code

    def _failed(self, cid: str, msg: str, foreground: bool) -> None:
        rec = self.store.update(cid, status="error", error=msg, finished=now())
        if rec.auto_remove and foreground:
            self._cleanup(cid)
        else:
            umount(self._bundle(cid) / "rootfs", lazy=True)  # kept for `inspect`, not mounted

    def _delete_runtime(self, cid: str) -> None:
        subprocess.run([*runtime_argv(), "delete", "--force", cid], capture_output=True)

    def _cleanup(self, cid: str) -> None:
        rootfs = self._bundle(cid) / "rootfs"
        umount(rootfs, lazy=True)
        self.store.delete(cid)

    # -- other commands -------------------------------------------------------------------------
    def stop(self, ref: str, timeout: float = STOP_TIMEOUT_S) -> ContainerRecord:
        rec = self.store.find(ref)
        if not rec.is_alive():
            return rec
        rt = runtime_argv()
        subprocess.run([*rt, "kill", rec.id, "TERM"], capture_output=True)
        if not self._wait_exit(rec.id, timeout):
            subprocess.run([*rt, "kill", rec.id, "KILL"], capture_output=True)
            if not self._wait_exit(rec.id, 10.0):
                raise ContainerError(f"container {rec.name} did not stop after SIGKILL")
        return self.store.load(rec.id) if self.store.dir(rec.id).exists() else rec

    def _wait_exit(self, cid: str, timeout: float) -> bool:
        """True once the supervisor recorded the exit (or the container is gone, or its
        supervisor died so nobody will record it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.store.dir(cid).exists():
                return True  # a --rm container, already cleaned up
            rec = self.store.load(cid)
            if rec.status != "running":
                return True
            if not rec.is_alive() and not _pid_alive(rec.monitor_pid):
                return True
            time.sleep(0.02)
        return False

    def remove(self, ref: str, *, force: bool = False) -> ContainerRecord:
        rec = self.store.find(ref)
        if rec.is_alive():
            if not force:
                raise StateError(f"container {rec.name} is running (stop it first, or use -f)")
            subprocess.run([*runtime_argv(), "kill", rec.id, "KILL"], capture_output=True)
            self._wait_exit(rec.id, 10.0)
        if not self.store.dir(rec.id).exists():
            return rec
        self._delete_runtime(rec.id)
        self._cleanup(rec.id)
        return rec

    def exec(self, ref: str, command: list[str], env: list[str] | None = None) -> int:
        rec = self.store.find(ref)
        if not rec.is_alive():
            raise StateError(f"container {rec.name} is not running")
        if not command:
            raise InvalidInput("exec needs a command")
        proc = dict(rec.process)
        proc["args"] = list(command)
        base_env = list(proc.get("env", []))
        from arca.host.imageconfig import replace_or_append_env

        proc["env"] = replace_or_append_env(base_env, list(env or []))
        proc["terminal"] = False
        pf = self.store.dir(rec.id) / f"exec-{os.getpid()}.json"
        pf.write_text(json.dumps(proc))
        try:
            res = subprocess.run([*runtime_argv(), "exec", "--process", str(pf), rec.id])
        finally:
            pf.unlink(missing_ok=True)
        return res.returncode

    def logs(self, ref: str, *, follow: bool = False) -> Iterator[bytes]:
        rec = self.store.find(ref)
        path = self.log_path(rec.id)
        try:
            f = open(path, "rb")  # noqa: SIM115 - generator closes it
        except FileNotFoundError:
            return
        with f:
            while True:
                chunk = f.read(65536)
                if chunk:
                    yield chunk
                    continue
                if not follow:
                    return
                try:
                    cur = self.store.load(rec.id)
                except ArcaError:
                    return
                if cur.status in ("exited", "error") or (
                        cur.status == "running" and not cur.is_alive()):
                    rest = f.read()
                    if rest:
                        yield rest
                    return
                time.sleep(0.1)

    def inspect(self, ref: str) -> dict[str, Any]:
        rec = self.store.find(ref)
        obj = rec.to_json()
        obj["state"] = rec.display_status
        obj["bundle"] = str(self._bundle(rec.id))
        obj["log"] = str(self.log_path(rec.id))
        return obj

    def images_in_use(self, digest: str) -> list[str]:
        return [r.name for r in self.store.list() if r.image_digest == digest]


def _exited(pid: int) -> int | None:
    """The exit status of our child ``pid`` if it has exited (reaping it), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return 255
    return os.waitstatus_to_exitcode(status) if done else None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return 255  # not our child after all (lost): unknown exit status
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code


def _last_error(log: Path) -> str | None:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("level") == "error":
            return str(obj.get("msg"))
    return None
