"""``arca run`` and friends: containers from the image store, driven through ``arca-runtime``.

No daemon. A container's lifecycle is owned by a *supervisor*: the ``arca run`` process itself
in the foreground, or for ``-d`` a small per-container monitor process (like podman's conmon),
forked from the CLI into its own session, that outlives the CLI. The supervisor makes itself a
child subreaper, calls ``arca-runtime create`` and ``start`` (without a TEE: one
``run --detach``; the container's stdio is the supervisor's: the terminal, or the container's
log file), waits for the container's init process (which becomes its child when the runtime
exits), records the exit code, and calls ``arca-runtime delete`` (which unregisters a TD). The
container's root filesystem is an overlay of the store's shared layer directories with a
private upper directory, mounted before ``create`` and unmounted when the container exits (its
changes stay in the upper directory until ``rm``). What the image store answers for an image,
command and environment is remembered (:mod:`.runplan`), so a repeated ``arca run`` neither
asks the store again nor imports it. An image not in the store is pulled first
(``--pull``, :mod:`.imagepull`), only after the run plan and the store missed.

With ``-t`` the supervisor receives the container's terminal from runc and copies it
(:mod:`.terminal`): to the user's terminal in the foreground, into the log with ``-d``. Without
``-i`` a foreground container's stdin is /dev/null.

``exec`` goes through ``arca-runtime exec``, so the TD's execution policy applies; ``exec -t``
gets its own terminal the same way as ``run -t`` (``exec --detach`` with a console socket, the
process inherited as subreaper), ``-i`` gives it stdin (else /dev/null). ``attach``:
:mod:`.attach` (a ``-d -i`` container's stdin is a pipe its monitor keeps open for it).

Each container has a private network namespace connected by pasta, ``-p`` publishing its
ports (:mod:`.network`), unless ``--network host`` or ``none``; the supervisor sets it up right
before the runtime's step and removes it when the container exits.
"""

from __future__ import annotations

import ctypes
import os
import select
import sys
import time

from arca._internal.fastjson import json_dumps, json_loads
from arca._internal.fsutil import secure_state_dirs
from arca._internal.procs import pid_alive
from arca.errors import ArcaError, InvalidInput, NotFound, StateError
from arca.host.backends import DEFAULT as DEFAULT_TEE
from arca.host.containers import network, runplan, spawn
from arca.host.containers.spec import Volume, build_spec, generated_init_data
from arca.host.containers.state import (
    ContainerRecord,
    ContainerStore,
    FileLock,
    now,
    root_dir,
    run_dir,
)
from arca.host.images.mount import mount_overlay, umount

# Every ``arca run`` imports this module: no dataclasses, typing, pathlib, subprocess or the
# image store's parsers at run time (~40 ms of imports, twice what ``runc run`` takes to run a
# container). The store is imported when a run plan is missing (:mod:`.runplan`) and for
# ``images_in_use``. :mod:`signal` (its enums: ~3 ms) is imported by the methods that send or
# catch signals, not by ``inspect``, ``logs`` and the like.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from typing import Any, BinaryIO

    from arca.host.images.registry import Credentials
    from arca.host.images.store import ImageStore

PR_SET_CHILD_SUBREAPER = 36
#: ``--restart`` policies (podman's); ``on-failure`` takes ``:N``, the most restarts.
RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")
#: The monitor waits this long before a restart, doubling per restart up to the cap (as
#: podman/docker back off), so a container that exits at once does not spin a CPU.
RESTART_DELAY_S = 0.1
RESTART_DELAY_MAX_S = 5.0
#: How long ``run -d`` waits for the monitor to report the container started.
START_TIMEOUT_S = 60.0
#: The spec ``arca run`` wrote, kept for ``arca start`` (next to the record).
SPEC_COPY = "config.orig.json"
#: ``--label``s of a container, next to its record (``labels`` in ``inspect``).
LABELS_FILE = "labels.json"
#: Default grace period of ``stop`` before SIGKILL (docker's default).
STOP_TIMEOUT_S = 10.0


class ContainerError(ArcaError):
    """The runtime failed to create, start or stop a container."""


class CommandCannotRun(ContainerError):
    """The container's command could not be started: podman's exit codes, 127 when it is not
    found, 126 when it cannot be executed (:attr:`exit_code`)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _start_failure(name: str, msg: str) -> ContainerError:
    """The error for a runtime's refusal ``msg``: runc's words for a command that is missing
    or not executable become :class:`CommandCannotRun`."""
    low = msg.lower()
    if "exec:" in low and ("not found" in low or "no such file" in low):
        return CommandCannotRun(f"container {name}: {msg}", 127)
    if "exec:" in low and "permission denied" in low:
        return CommandCannotRun(f"container {name}: {msg}", 126)
    return ContainerError(f"container {name}: {msg}")


#: runc exec's exit status when it could not start the process at all.
RUNC_CANNOT_EXEC = 255

#: ``--pull``: when ``arca run`` pulls the image (:mod:`.imagepull`).
PULL_POLICIES = ("missing", "always", "never")


class PullSettings:
    """How ``arca run`` may pull: the policy and ``arca image pull``'s options. ``credentials``
    maps the reference to its credentials (or None) and is called only for a pull."""

    __slots__ = ("policy", "insecure", "ca_file", "credentials", "quiet")

    def __init__(self, policy: str = "missing", *, insecure: bool = False,
                 ca_file: str | None = None,
                 credentials: Callable[[str], Credentials | None] | None = None,
                 quiet: bool = False) -> None:
        if policy not in PULL_POLICIES:
            raise InvalidInput(f"--pull {policy!r}: must be one of {', '.join(PULL_POLICIES)}")
        self.policy = policy
        self.insecure = insecure
        self.ca_file = ca_file
        self.credentials = credentials
        self.quiet = quiet


class RunOptions:
    """What ``arca run`` was asked to do (a plain class: a frozen dataclass costs ~1 ms to
    define and dataclasses ~5 ms to import, on every run)."""

    __slots__ = ("image", "command", "name", "detach", "auto_remove", "env", "volumes", "tee",
                 "kbs_url", "init_data", "pull", "tty", "interactive", "network", "publish",
                 "entrypoint", "user", "workdir", "labels", "read_only", "memory", "cpus",
                 "restart")

    def __init__(self, image: str, command: list[str] | None = None, name: str | None = None,
                 detach: bool = False, auto_remove: bool = False, env: list[str] | None = None,
                 volumes: list[str] | None = None, tee: str = DEFAULT_TEE,
                 kbs_url: str | None = None,
                 init_data: bytes | None = None, pull: PullSettings | None = None,
                 tty: bool = False, interactive: bool = False, network: str = "private",
                 publish: list[str] | None = None, entrypoint: str | None = None,
                 user: str | None = None, workdir: str | None = None,
                 labels: dict[str, str] | None = None, read_only: bool = False,
                 memory: str | None = None, cpus: str | None = None,
                 restart: str = "no") -> None:
        self.image = image
        self.command = list(command or [])
        self.name = name
        self.detach = detach
        self.auto_remove = auto_remove
        self.env = list(env or [])
        self.volumes = list(volumes or [])
        self.tee = tee
        self.kbs_url = kbs_url
        self.init_data = init_data
        #: when the image may be pulled (default: ``--pull missing`` without credentials)
        self.pull = pull or PullSettings()
        self.tty = tty  # -t: a pseudo-terminal for the process
        self.interactive = interactive  # -i: the process reads arca run's stdin
        self.network = network  # --network private|host|none (:mod:`.network`)
        self.publish = list(publish or [])  # -p [IP:]HOST:CONTAINER[/proto]
        # podman's flags (:mod:`.runflags`): in place of the image's entrypoint, user, workdir
        self.entrypoint = entrypoint
        self.user = user
        self.workdir = workdir
        self.labels = dict(labels or {})
        self.read_only = read_only  # the rootfs read-only, tmpfs on /tmp, /var/tmp, /run
        self.memory = memory  # --memory 512m
        self.cpus = cpus  # --cpus 1.5
        self.restart = restart  # --restart no|on-failure[:N]|always|unless-stopped


def runtime_argv() -> list[str]:
    """``arca-runtime`` with Arca's own runc state root (so ``arca ps`` sees only its own)."""
    exe = os.environ.get("ARCA_RUNTIME_BIN")
    if not exe:
        sibling = os.path.join(os.path.dirname(sys.executable), "arca-runtime")
        if os.path.exists(sibling):
            exe = sibling
        else:
            import shutil

            exe = shutil.which("arca-runtime") or ""
    if not exe:
        raise ContainerError("arca-runtime is not installed (not next to the Python "
                             "interpreter and not on PATH)")
    return [exe, "--root", os.path.join(run_dir(), "runc")]


def runtime_env(tee: str) -> Mapping[str, str]:
    """The runtime's environment: for ``--tee none`` ARCA_TEE=none, so an operator's default
    TEE (runtime config, ARCA_TEE) cannot turn a container that asked for none into a TD; the
    bundle then carries no Arca annotation and the runtime's C front end hands it to runc
    without starting Python or asking the sim daemon."""
    return {**os.environ, "ARCA_TEE": "none"} if tee == "none" else os.environ


def parse_restart(policy: str) -> tuple[str, int | None]:
    """``--restart`` as (policy, most restarts or None for unlimited)."""
    name, colon, count = policy.partition(":")
    if name not in RESTART_POLICIES or (colon and name != "on-failure"):
        raise InvalidInput(f"--restart {policy!r}: must be no, on-failure[:N], always or "
                           "unless-stopped")
    if not colon:
        return name, None
    if not count.isdigit():
        raise InvalidInput(f"--restart {policy!r}: N must be a number of restarts")
    return name, int(count) or None


def restart_due(rec: ContainerRecord) -> bool:
    """Whether the monitor runs the exited container ``rec`` again: per its policy, never
    after ``arca stop`` (``manual_stop``). ``unless-stopped`` is ``always`` here: with no
    daemon there is no host boot to tell them apart."""
    if rec.manual_stop or rec.status != "exited":
        return False
    name, most = parse_restart(rec.restart_policy)
    if name in ("always", "unless-stopped"):
        return True
    if name == "on-failure":
        return rec.exit_code != 0 and (most is None or rec.restart_count < most)
    return False


class _StoppedMeanwhile(ArcaError):
    """`arca stop` came while the monitor was preparing a restart."""


def _not_stopped(rec: ContainerRecord) -> None:
    if rec.manual_stop:
        raise _StoppedMeanwhile(f"container {rec.name} was stopped")


def _set_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)  # libc is already loaded: no ldconfig lookup
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise ContainerError("prctl(PR_SET_CHILD_SUBREAPER) failed: "
                             f"{os.strerror(ctypes.get_errno())}")


class Engine:
    def __init__(self, images: ImageStore | None = None,
                 containers: ContainerStore | None = None) -> None:
        self._images = images
        #: Run plans (:mod:`.runplan`) describe the default store only.
        self._plans = images is None
        self.store = containers or ContainerStore()

    @property
    def images(self) -> ImageStore:
        if self._images is None:
            from arca.host.images.store import ImageStore

            self._images = ImageStore()
        return self._images

    # -- paths ---------------------------------------------------------------------------------
    def _dir(self, cid: str) -> str:
        # absolute: the runtime gets these paths and runs in another working directory
        return os.path.abspath(self.store.dir(cid))

    def _bundle(self, cid: str) -> str:
        return os.path.join(self._dir(cid), "bundle")

    def log_path(self, cid: str) -> str:
        return os.path.join(self._dir(cid), "container.log")

    # -- run -----------------------------------------------------------------------------------
    def prepare(self, opts: RunOptions) -> ContainerRecord:
        """Create the container record, mount its rootfs and write its bundle."""
        # Root-only state (issue 13, item 12); also tightens what an older version left open.
        secure_state_dirs(root_dir(), run_dir())
        if opts.init_data is not None and opts.kbs_url:
            raise InvalidInput("--kbs and --init-data exclude each other: put kbs_url into the "
                               "init-data file (it is measured as given)")
        init_data = opts.init_data
        volumes = [Volume.parse(v) for v in opts.volumes]
        if opts.kbs_url or (volumes and init_data is None and opts.tee != "none"):
            # A TD's mounts must be allowed by its measured init-data (issue 11 §3): without
            # the tenant's own, -v generates one allowing exactly these destinations.
            init_data = generated_init_data(opts.kbs_url, [v.destination for v in volumes])
        if init_data is not None and opts.tee == "none":
            raise InvalidInput(f"init-data needs a TEE (--tee {DEFAULT_TEE})")
        parse_restart(opts.restart)
        if opts.restart != "no" and (opts.auto_remove or not opts.detach):
            raise InvalidInput(f"--restart {opts.restart} needs -d and no --rm: a detached "
                               "container's monitor restarts it")
        net = network.NetworkPlan.parse(opts.network, opts.publish, init_data)
        overrides = (opts.entrypoint, opts.user, opts.workdir) != (None, None, None)
        limits: dict[str, Any] = {}
        if opts.memory is not None or opts.cpus is not None or opts.read_only:
            from arca.host.containers import runflags

            limits = {"memory": runflags.parse_memory(opts.memory) if opts.memory else None,
                      "cpus": runflags.parse_cpus(opts.cpus) if opts.cpus else None,
                      "read_only": opts.read_only}
        may_pull = opts.pull.policy != "never" and not opts.image.startswith("oci:")
        if may_pull and opts.pull.policy == "always":
            from arca.host.containers import imagepull

            # asks the registry first; an unchanged image leaves images.json (and so the run
            # plan) as it was
            imagepull.refresh(self.images, opts.image, opts.pull)
        # run plans remember the image's process: not for one with its parts overridden
        plans = self._plans and not overrides
        plan = runplan.lookup(opts.image, opts.command, opts.env) if plans else None
        config = None
        if plan is not None:
            image_name, image_digest, lowers, proc = plan
        else:
            # The slow path: the store, its parsers and imageconfig (~20 ms of imports).
            from arca.host.images.errors import ImageNotFound
            from arca.host.images.ingest import resolve

            deps = runplan.dependencies(opts.image) if plans else None
            sigs = runplan.signatures(deps) if deps is not None else None
            try:
                record = resolve(self.images, opts.image)
            except ImageNotFound:
                if not may_pull:
                    raise
                from arca.host.containers import imagepull

                imagepull.pull_missing(self.images, opts.image, opts.pull)
                # signatures of what the store holds now, before reading it (see runplan)
                sigs = runplan.signatures(deps) if deps is not None else None
                record = resolve(self.images, opts.image)
            config = self.images.config_of(record)
            if overrides:
                from arca.host.containers.runflags import override_config

                config = override_config(config, entrypoint=opts.entrypoint, user=opts.user,
                                         workdir=opts.workdir)
            image_name, image_digest = record.name, record.digest
            lowers = [os.fspath(p) for p in self.images.lowerdirs(record)]
        # monitor_pid: this process until a -d container's monitor takes over, so a killed
        # `arca run` leaves a record that says whose it was (:meth:`reap_lost`)
        fields = dict(image=image_name, image_digest=image_digest,
                      tee=opts.tee, args=(), auto_remove=opts.auto_remove,
                      monitor_pid=os.getpid(),
                      detached=opts.detach, tty=opts.tty,
                      interactive=opts.interactive, restart_policy=opts.restart)
        try:
            rec = self.store.create(name=opts.name, **fields)  # type: ignore[arg-type]
        except StateError:
            # The name may be held by a lost foreground container (its `arca run` was
            # killed): reap it as `ps` would, then take the name if that freed it (a --rm
            # one is gone; another stays, exited, as podman's does, and the name with it).
            if opts.name is None or not self._reap_holder(opts.name):
                raise
            rec = self.store.create(name=opts.name, **fields)  # type: ignore[arg-type]
        try:
            d = self._dir(rec.id)
            bundle = self._bundle(rec.id)
            rootfs = os.path.join(bundle, "rootfs")
            os.mkdir(bundle, 0o711)
            if opts.tee != "none":  # what `arca ps` shows of the TD
                from arca.host.containers import tdinfo

                tdinfo.record(d, opts.tee, init_data)
            if opts.labels:
                with open(os.path.join(d, LABELS_FILE), "w") as f:
                    f.write(json_dumps(opts.labels))
            # Held shared while mounting, as the store's own readers do: prune (exclusive)
            # cannot remove these layer directories in between.
            images_root = (os.fspath(self._images.root) if self._images is not None
                           else runplan.images_root())
            with FileLock(os.path.join(images_root, "gc.lock"), shared=True):
                # --rm: the upper directory is deleted with the container, so it need not
                # survive a host crash, and its unmount need not sync the host's filesystem.
                mount_overlay(rootfs, lowers, os.path.join(d, "upper"), os.path.join(d, "work"),
                              volatile=opts.auto_remove)
            os.chmod(rootfs, 0o755)  # noqa: S103 - the container's /
            # named volumes: created if missing, recorded as this container's
            named = [v for v in volumes if v.volume is not None]
            if named:
                from arca.host.containers.volumes import VolumeStore

                paths = VolumeStore(containers=self.store).attach(
                    rec.id, [str(v.volume) for v in named])
                for v, path in zip(named, paths, strict=True):
                    v.source = path
            if opts.tee != "none":
                from arca.host.hashprogress import warm_rootfs_digest

                # the runtime's hash, with progress (in a log too, unless a run plan says
                # this image ran here before: see warm_rootfs_digest)
                warm_rootfs_digest(rootfs, image_name, plain=plan is None)
            if config is not None:
                from pathlib import Path

                from arca.host.imageconfig import process_from_image

                proc = process_from_image(config, Path(rootfs), args=opts.command or None,
                                          env=opts.env).to_oci()
                if sigs is not None:
                    runplan.remember(opts.image, sigs, image_name, image_digest, lowers,
                                     opts.command, opts.env, proc)
            size = None
            if opts.tty:
                from arca.host.containers import terminal

                local = None if opts.detach else terminal.local_terminal()
                size = (local is not None and terminal.window_size(local)
                        or terminal.DEFAULT_SIZE)
            if net.mode != "host":
                net.save(d)
            resolv = os.path.join(d, "resolv.conf")
            if net.mode == "private":
                with open(resolv, "w") as f:
                    f.write(network.resolv_conf_text())
            spec = build_spec(proc, container_id=rec.id, hostname=rec.id[:12], tee=opts.tee,
                              volumes=volumes, init_data=init_data, terminal=size,
                              network=network.spec_network(
                                  net, network.netns_path(run_dir(), rec.id), resolv))
            if net.publish and opts.tee != "none":
                from arca.host.annotations import ANNOTATION_PORTS

                # a VM TD forwards these from the namespace into its guest (ADR 0042)
                spec["annotations"][ANNOTATION_PORTS] = ",".join(
                    f"{p.proto}/{p.container_port}" for p in net.publish)
            if limits:
                from arca.host.containers import runflags

                runflags.apply(spec, **limits)
            with open(os.path.join(bundle, "config.json"), "w") as f:
                f.write(json_dumps(spec))
            if not opts.auto_remove:
                # `arca start` creates it again from this: the runtime rewrites config.json
                # of a TEE container (the agent in place of the process)
                with open(os.path.join(d, SPEC_COPY), "w") as f:
                    f.write(json_dumps(spec))
            return self.store.update(rec.id, args=tuple(proc["args"]), process=proc)
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
                raise _start_failure(rec.name, str(cur.error))
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
        attach_sock = ""
        try:
            os.close(started_r)
            os.setsid()
            if self.store.load(cid).interactive:
                # -d -i: the container's stdin is a pipe kept open for `arca attach`
                from arca.host.containers.attach import serve_stdin

                stdin_r, stdin_w = os.pipe()
                os.dup2(stdin_r, 0)
                os.close(stdin_r)
                attach_sock = serve_stdin(cid, stdin_w)
            else:
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            self._monitor(cid, started_w)
            code = 0
        except ArcaError as e:
            print(f"arca-monitor: error: {e}", file=sys.stderr)
        except BaseException:  # noqa: BLE001 - the monitor must never return into the CLI
            import traceback

            traceback.print_exc()
        finally:
            if attach_sock:
                try:
                    os.unlink(attach_sock)
                except OSError:
                    pass
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except Exception:  # noqa: BLE001,S110 - exiting anyway
                pass
            os._exit(code)

    def _monitor(self, cid: str, started_fd: int) -> None:
        """A detached container's monitor: supervise it, and run it again while its restart
        policy says so (a TEE container in a new TD, measured again, as ``arca start``)."""
        self.supervise(cid, foreground=False, started_fd=started_fd)
        while True:
            try:
                rec = self.store.load(cid)
            except NotFound:
                return  # removed
            if not restart_due(rec):
                return
            time.sleep(min(RESTART_DELAY_S * 2 ** min(rec.restart_count, 8),
                           RESTART_DELAY_MAX_S))
            try:
                self._rearm(rec, restart_count=rec.restart_count + 1,
                            monitor_pid=os.getpid(), check=_not_stopped)
            except (_StoppedMeanwhile, NotFound):
                return
            self.supervise(cid, foreground=False)

    def supervise(self, cid: str, *, foreground: bool, started_fd: int | None = None) -> int:
        """Create, start and wait for the container; returns its exit code (128+N on signal N).
        Runs in the ``arca run`` process or in the monitor; the monitor passes ``started_fd``,
        written to and closed once the container is recorded running."""
        import signal
        _set_subreaper()
        rec = self.store.load(cid)
        d = self._dir(cid)
        rt = runtime_argv()
        env = runtime_env(rec.tee)
        pidfile = os.path.join(d, "pid")
        runtime_log = os.path.join(d, "runtime.log")
        # A private network: its namespace now, pasta connecting it meanwhile (:mod:`.network`).
        try:
            plan = network.NetworkPlan.load(d)
            net = network.start(plan, run_dir(), cid, userns=_td_userns(d, rec.tee, plan))
            if plan.early:
                network.wait_ready(net)  # a TD's agent starts at create: it may need the KBS
                net = None
        except ArcaError as e:
            self._failed(cid, str(e), foreground)
            raise ContainerError(f"container {rec.name}: {e}") from None
        # Without a TEE, one `runc run --detach` does what `create` + `start` do, in one runc
        # process instead of two (~5 ms), unless pasta is still connecting the network: then
        # `create` runs meanwhile and `start` waits for it (so does a TD's without init-data:
        # its agent talks to no broker before `start`). A TD is created and started in two
        # steps (the runtime does not `run` TEE containers: ADR 0003).
        step = "run" if rec.tee == "none" and net is None else "create"
        # -t: runc sends the terminal's master side over this socket during the step
        console = self._console_socket(cid) if rec.tty else None
        # in the foreground our stdin; a -d -i container's monitor's (a pipe for attach)
        reads_stdin = rec.interactive
        master = -1
        # A foreground container that stays (no --rm) keeps its output for `arca logs`, as
        # podman's does: its stdout and stderr are pipes the supervisor copies to ours and to
        # the log. (With -t the terminal goes to ours only.)
        tee = foreground and not rec.auto_remove and not rec.tty
        out_r = out_w = err_r = err_w = -1
        if tee:
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
        try:
            code = spawn.run([*rt, "--log", runtime_log, "--log-format", "json", step,
                              *(["--detach"] if step == "run" else []),
                              *(["--console-socket", console.path] if console else []),
                              "--bundle", self._bundle(cid), "--pid-file", pidfile, cid],
                             env=env, no_stdin=not reads_stdin,
                             stdout_fd=out_w if tee else None, stderr_fd=err_w if tee else None)
            no_terminal = ""
            if code == 0 and console is not None:
                try:
                    master = console.receive()
                except OSError as e:
                    no_terminal = f"the runtime sent no terminal: {e}"
        finally:
            if console is not None:
                console.close()
            if tee:
                os.close(out_w)
                os.close(err_w)
        if code != 0:
            network.abandon(net)
            if tee:
                os.close(out_r)
                os.close(err_r)
            msg = _last_error(runtime_log) or f"arca-runtime {step} exited {code}"
            self._failed(cid, msg, foreground)
            raise _start_failure(rec.name, msg)
        with open(pidfile, "rb") as f:
            pid = int(f.read().strip())
        # Signals for the container arriving at the supervisor are passed on.
        forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
        old = {s: signal.signal(s, lambda s, _f: _kill(pid, s)) for s in forwarded}
        raw = None
        try:
            if master >= 0 and foreground:
                raw = self._attach_terminal(master, rec.interactive, old)
            try:
                network.wait_ready(net)
            except ArcaError as e:
                no_terminal = str(e)  # not started: handled as a failed start below
            start_code, err = (0, "") if step == "run" or no_terminal else \
                spawn.run_capturing_stderr([*rt, "start", cid], env=env)
            if no_terminal or start_code != 0:
                _kill(pid, signal.SIGKILL)
                _reap(pid)
                self._delete_runtime(cid, env)
                msg = no_terminal or err.strip() or f"arca-runtime start exited {start_code}"
                self._failed(cid, msg, foreground)
                raise ContainerError(f"container {rec.name}: {msg}")
            self.store.update(cid, status="running", pid=pid, started=now(),
                              monitor_pid=os.getpid())
            if rec.tee != "none":
                from arca.host.containers import tdinfo

                tdinfo.add_measurement(d, cid, run_dir())
            if started_fd is not None:
                try:
                    os.write(started_fd, b"1")
                except BrokenPipeError:
                    pass  # `arca run -d` saw the record first and stopped listening
                os.close(started_fd)
            if master >= 0:
                from arca.host.containers import terminal

                # the monitor's stdout is the container's log
                terminal.pump(master, pid, out_fd=1, in_fd=0 if reads_stdin else None)
            if tee:
                _tee_output(pid, out_r, err_r, self.log_path(cid))
            code = _reap(pid)
        finally:
            if tee:
                for fd in (out_r, err_r):
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            if raw is not None:
                raw.__exit__(None, None, None)
            for s, h in old.items():
                signal.signal(s, h)
            if master >= 0:
                os.close(master)
        try:
            self.store.update(cid, status="exited", exit_code=code, finished=now())
        except NotFound:
            return code  # `arca rm -f` removed it meanwhile and cleaned up
        # Arca's own cleanup overlaps the runtime's delete, which needs none of it (runc's
        # state and the TD's files live in the run directory): ~2 ms off every --rm.
        deleting: int | None = spawn.spawn([*rt, "delete", "--force", cid], env=env, quiet=True)
        try:
            network.teardown(run_dir(), cid)
            if rec.auto_remove:
                # A TD's root is the runtime's overlay over upper/ (its user namespace, ADR
                # 0048) until that delete unmounts it: only then may upper/ go.
                if rec.tee != "none" and deleting is not None:
                    spawn.wait(deleting)
                    deleting = None
                self._cleanup(cid)
            else:
                # No restarts: the rootfs is not needed until `rm` (its changes stay in upper/).
                umount(os.path.join(self._bundle(cid), "rootfs"), lazy=True)
        finally:
            if deleting is not None:
                spawn.wait(deleting)
        return code

    def _console_socket(self, cid: str) -> Any:
        from arca.host.containers import terminal

        # in the run directory: unix socket paths are limited to 107 bytes
        os.makedirs(run_dir(), mode=0o700, exist_ok=True)
        return terminal.ConsoleSocket(os.path.join(run_dir(), f"console-{cid[:16]}.sock"))

    def _attach_terminal(self, master: int, interactive: bool,
                         old_handlers: dict[Any, Any]) -> Any:
        """The user's terminal on the container's: window size now and on SIGWINCH (its old
        handler goes into ``old_handlers`` to be put back), raw mode with ``-i``. Returns the
        entered raw mode, to be left when the container exits."""
        import signal

        from arca.host.containers import terminal

        local = terminal.local_terminal()
        if local is not None:
            def follow(_s: int, _f: object) -> None:
                size = terminal.window_size(local)
                if size is not None:
                    try:
                        terminal.set_window_size(master, size)
                    except OSError:
                        pass  # the container's terminal is gone: it is exiting

            follow(0, None)
            old_handlers[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, follow)
        raw = terminal.RawMode(0 if interactive else None)
        raw.__enter__()
        return raw

    def _failed(self, cid: str, msg: str, foreground: bool) -> None:
        network.teardown(run_dir(), cid)
        rec = self.store.update(cid, status="error", error=msg, finished=now())
        if rec.auto_remove and foreground:
            self._cleanup(cid)
        else:
            # kept for `inspect`, not mounted
            umount(os.path.join(self._bundle(cid), "rootfs"), lazy=True)

    def _delete_runtime(self, cid: str, env: Mapping[str, str] | None = None) -> None:
        spawn.run([*runtime_argv(), "delete", "--force", cid], env=env, quiet=True)

    def _cleanup(self, cid: str) -> None:
        network.teardown(run_dir(), cid)
        umount(os.path.join(self._bundle(cid), "rootfs"), lazy=True)
        _release_td_userns(self._dir(cid))
        self.store.delete(cid)

    # -- other commands -------------------------------------------------------------------------
    def stop(self, ref: str, timeout: float = STOP_TIMEOUT_S) -> ContainerRecord:
        rec = self.store.find(ref)
        if rec.restart_policy != "no":
            # first, so its monitor restarts it no more; one restarting right now (created,
            # not yet running) is waited for and stopped like a running one
            rec = self.store.update(rec.id, manual_stop=True)
            deadline = time.monotonic() + START_TIMEOUT_S
            while (rec.status == "created" and pid_alive(rec.monitor_pid)
                   and time.monotonic() < deadline):
                time.sleep(0.05)
                rec = self.store.load(rec.id)
        if not rec.is_alive():
            return rec
        rt = runtime_argv()
        spawn.run([*rt, "kill", rec.id, "TERM"], quiet=True)
        if not self._wait_exit(rec.id, timeout):
            spawn.run([*rt, "kill", rec.id, "KILL"], quiet=True)
            if not self._wait_exit(rec.id, 10.0):
                raise ContainerError(f"container {rec.name} did not stop after SIGKILL")
        return self.store.load(rec.id) if os.path.exists(self.store.dir(rec.id)) else rec

    def start(self, ref: str) -> ContainerRecord:
        """Run an exited (or failed) container again, detached, as podman's ``start``: the
        same bundle and process, its rootfs changes kept (the upper directory), a new TD for
        a TEE container (measured again by the runtime). Returns once it runs."""
        rec = self.store.find(ref)
        if self.is_lost(rec):
            self._finish_lost(rec)
            rec = self.store.load(rec.id)
        if rec.is_alive():
            return rec  # podman: starting a running container is no error
        if rec.status not in ("exited", "error"):
            raise StateError(f"container {rec.name} is {rec.status}: cannot start it")
        rec = self._rearm(rec, detached=True, interactive=False, monitor_pid=os.getpid(),
                          manual_stop=False)
        monitor, started = self._spawn_monitor(rec.id)
        try:
            return self._await_start(rec, monitor, started)[0]
        finally:
            os.close(started)

    def _rearm(self, rec: ContainerRecord,
               check: Callable[[ContainerRecord], None] | None = None,
               **changes: Any) -> ContainerRecord:
        """Make an exited container ready to run again (``start``, a restart): the runtime's
        old state deleted, the bundle's spec as ``arca run`` wrote it (the runtime rewrote
        it for a TD), the overlay mounted again; recorded ``created`` with ``changes`` if
        ``check`` (under the store's lock) allows it, else unmounted again."""
        from arca.host.images.errors import ImageNotFound

        try:
            lowers = [os.fspath(p) for p in self.images.lowerdirs(
                self.images.get(rec.image_digest))]
        except ImageNotFound:
            raise StateError(f"container {rec.name}: its image {rec.image} was removed") from None
        d = self._dir(rec.id)
        try:
            with open(os.path.join(d, SPEC_COPY), "rb") as f:
                spec = f.read()
        except FileNotFoundError:
            raise StateError(f"container {rec.name} was made by an older arca: it cannot be "
                             "started again (arca run a new one)") from None
        self._delete_runtime(rec.id, runtime_env(rec.tee))
        with open(os.path.join(self._bundle(rec.id), "config.json"), "wb") as f:
            f.write(spec)
        rootfs = os.path.join(self._bundle(rec.id), "rootfs")
        umount(rootfs, lazy=True)
        with FileLock(os.path.join(os.fspath(self.images.root), "gc.lock"), shared=True):
            mount_overlay(rootfs, lowers, os.path.join(d, "upper"), os.path.join(d, "work"))
        try:
            return self.store.update(rec.id, check=check, status="created", pid=0,
                                     exit_code=None, started=None, finished=None, error=None,
                                     **changes)
        except BaseException:
            umount(rootfs, lazy=True)
            raise

    def restart(self, ref: str, timeout: float = STOP_TIMEOUT_S) -> ContainerRecord:
        self.stop(ref, timeout)
        return self.start(ref)

    def top(self, ref: str) -> list[dict[str, Any]]:
        """The container's processes: pid, parent, user id, CPU seconds, and the command line.
        Those of its cgroup (``runc ps``) read from the host's /proc, or, where the container's
        process is a VMM, those of the guest as the guest sees them (``user`` too), if the
        TD's measured policy lets the host see them (ADR 0057)."""
        from arca.host import backends

        rec = self.store.find(ref)
        if not rec.is_alive():
            raise StateError(f"container {rec.name} is not running")
        if backends.available(rec.tee):
            guest = backends.get(rec.tee).processes(rec.id, rec.pid)
            if guest is not None:
                return guest
        code, out = _run_capturing_stdout([*runtime_argv(), "ps", "--format", "json", rec.id])
        if code != 0:
            raise ContainerError(f"top {rec.name}: the runtime exited {code}")
        try:
            pids = json_loads(out)
        except ValueError:
            pids = None
        if not isinstance(pids, list):
            raise ContainerError(f"top {rec.name}: the runtime's answer is not a pid list")
        tick = os.sysconf("SC_CLK_TCK")
        procs = []
        for pid in pids:
            try:
                with open(f"/proc/{int(pid)}/stat", "rb") as f:
                    stat = f.read().decode(errors="replace")
                with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
                    cmd = f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
                uid = os.stat(f"/proc/{int(pid)}").st_uid
            except (OSError, ValueError):
                continue  # exited meanwhile
            fields = stat[stat.rfind(")") + 2:].split()
            procs.append({"pid": int(pid), "ppid": int(fields[1]), "uid": uid,
                          "cpu_s": (int(fields[11]) + int(fields[12])) / tick,
                          "command": cmd or stat[stat.find("(") + 1:stat.rfind(")")]})
        return procs

    def stats(self, ref: str) -> dict[str, Any]:
        """CPU time, memory use and limit, and process count of a running container, from its
        cgroup (``linux.cgroupsPath`` = /arca/ID; cgroup v2 or v1)."""
        rec = self.store.find(ref)
        if not rec.is_alive():
            raise StateError(f"container {rec.name} is not running")
        base = "/sys/fs/cgroup"
        rel = f"arca/{rec.id}"

        def read(*paths: str) -> str | None:
            for p in paths:
                try:
                    with open(os.path.join(base, p)) as f:
                        return f.read()
                except OSError:
                    continue
            return None

        def num(text: str | None) -> int | None:
            t = (text or "").strip()
            return int(t) if t.isdigit() else None

        cpu_ns = num(read(f"cpuacct/{rel}/cpuacct.usage"))
        if cpu_ns is None:
            stat = read(f"{rel}/cpu.stat") or ""
            usec = [ln.split()[1] for ln in stat.splitlines() if ln.startswith("usage_usec ")]
            cpu_ns = int(usec[0]) * 1000 if usec else None
        limit = num(read(f"{rel}/memory.max", f"memory/{rel}/memory.limit_in_bytes"))
        pids = num(read(f"{rel}/pids.current", f"pids/{rel}/pids.current"))
        return {"id": rec.id, "name": rec.name,
                "cpu_seconds": cpu_ns / 1e9 if cpu_ns is not None else None,
                "memory_bytes": num(read(f"{rel}/memory.current",
                                         f"memory/{rel}/memory.usage_in_bytes")),
                "memory_limit_bytes": limit if limit is not None and limit < 1 << 62 else None,
                "pids": pids}

    def kill(self, ref: str, sig: str = "KILL") -> ContainerRecord:
        """Send ``sig`` (a name, with or without SIG, or a number) to the container's process,
        through the runtime (a TD's agent passes it on like runc does)."""
        import signal
        name = sig.upper().removeprefix("SIG")
        if not (name.isdigit() and 0 < int(name) < 65) and not (
                name.isalnum() and hasattr(signal, "SIG" + name)):
            raise InvalidInput(f"--signal {sig!r}: not a signal")
        rec = self.store.find(ref)
        if not rec.is_alive():
            raise StateError(f"container {rec.name} is not running")
        code, err = spawn.run_capturing_stderr([*runtime_argv(), "kill", rec.id, name])
        if code != 0:
            raise ContainerError(f"kill {rec.name}: {err.strip() or f'runtime exited {code}'}")
        return rec

    def pause(self, ref: str, *, resume: bool = False) -> ContainerRecord:
        """Freeze every process of the container (``runc pause``: its cgroup's freezer), or
        thaw them (``resume``). A ``vm`` container's processes are its VMM and QEMU: the
        whole VM stops, guest clock and all, and goes on where it stopped."""
        rec = self.store.find(ref)
        if not rec.is_alive():
            raise StateError(f"container {rec.name} is not running")
        if rec.paused == (not resume):
            raise StateError(f"container {rec.name} is {'' if resume else 'already '}"
                             f"{'not paused' if resume else 'paused'}")
        verb = "resume" if resume else "pause"
        code, err = spawn.run_capturing_stderr([*runtime_argv(), verb, rec.id])
        if code != 0:
            raise ContainerError(f"{verb} {rec.name}: {err.strip() or f'runtime exited {code}'}")
        return self.store.update(rec.id, paused=not resume)

    def wait(self, ref: str, poll_s: float = 0.05) -> int:
        """Block until the container has exited; its exit code (podman's ``wait``). A
        container whose supervisor was killed has no recorded code: -1."""
        rec = self.store.find(ref)
        while True:
            try:
                cur = self.store.load(rec.id)
            except NotFound:
                return 0 if rec.auto_remove else -1  # removed meanwhile (--rm, or rm -f)
            if cur.status == "exited":
                return cur.exit_code if cur.exit_code is not None else -1
            if cur.status == "error" or (cur.status == "running" and not cur.is_alive()
                                         and not pid_alive(cur.monitor_pid)):
                return -1
            time.sleep(poll_s)

    def _wait_exit(self, cid: str, timeout: float) -> bool:
        """True once the supervisor recorded the exit (or the container is gone, or its
        supervisor died so nobody will record it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not os.path.exists(self.store.dir(cid)):
                return True  # a --rm container, already cleaned up
            rec = self.store.load(cid)
            if rec.status != "running":
                return True
            if not rec.is_alive() and not pid_alive(rec.monitor_pid):
                return True
            time.sleep(0.02)
        return False

    # -- lost containers -----------------------------------------------------------------------
    @staticmethod
    def is_lost(rec: ContainerRecord) -> bool:
        """Running, but its supervisor (the foreground ``arca run``, or a ``-d`` container's
        monitor) is gone: killed, so nobody will record its exit or clean it up (also
        ``arca.cli.table.supervisor_gone``, for ``ps`` without this module)."""
        return (rec.status in ("created", "running") and rec.monitor_pid > 0
                and rec.monitor_pid != os.getpid() and not pid_alive(rec.monitor_pid))

    def reap_lost(self) -> list[ContainerRecord]:
        """Finish what the killed supervisors of foreground containers (``arca run`` without
        ``-d``, whose user lost them with their terminal) left: the container's processes are
        killed, its runtime state and TD deleted, and a ``--rm`` container removed; others
        are recorded as exited (137). A ``-d`` container whose monitor was killed keeps
        running (as podman's does without conmon): ``ps`` shows it lost, ``rm`` needs no
        ``-f``. Returns the records reaped."""
        reaped = []
        for rec in self.store.list():
            if rec.detached or not self.is_lost(rec):
                continue
            self._finish_lost(rec)
            reaped.append(rec)
        return reaped

    def _reap_holder(self, name: str) -> bool:
        """Reap the lost foreground container named ``name``, if that is what it is."""
        try:
            holder = self.store.find(name)
        except NotFound:
            return False
        if holder.detached or not self.is_lost(holder):
            return False
        self._finish_lost(holder)
        return True

    def _finish_lost(self, rec: ContainerRecord) -> None:
        env = runtime_env(rec.tee)
        if rec.is_alive():
            spawn.run([*runtime_argv(), "kill", rec.id, "KILL"], env=env, quiet=True)
            deadline = time.monotonic() + 10.0
            while pid_alive(rec.pid) and time.monotonic() < deadline:
                time.sleep(0.01)  # not our child: its new parent (init) reaps it
        self._delete_runtime(rec.id, env)
        if rec.auto_remove:
            self._cleanup(rec.id)
            return
        try:
            self.store.update(rec.id, status="exited", exit_code=137, finished=now(),
                              error="its supervisor was killed; the container was reaped")
        except NotFound:
            return
        umount(os.path.join(self._bundle(rec.id), "rootfs"), lazy=True)

    def remove(self, ref: str, *, force: bool = False) -> ContainerRecord:
        rec = self.store.find(ref)
        if self.is_lost(rec):
            self._finish_lost(rec)  # nobody watches it: removing it needs no -f
            if not os.path.exists(self.store.dir(rec.id)):
                return rec
            rec = self.store.load(rec.id)
        if rec.is_alive():
            if not force:
                raise StateError(f"container {rec.name} is running (stop it first, or use -f)")
            if rec.restart_policy != "no":
                self.store.update(rec.id, manual_stop=True)  # its monitor: no restart
            spawn.run([*runtime_argv(), "kill", rec.id, "KILL"], quiet=True)
            self._wait_exit(rec.id, 10.0)
        if not os.path.exists(self.store.dir(rec.id)):
            return rec
        self._delete_runtime(rec.id)
        self._cleanup(rec.id)
        return rec

    def exec(self, ref: str, command: list[str], env: list[str] | None = None, *,
             tty: bool = False, interactive: bool = False) -> int:
        """Run ``command`` in the running container; its exit code (128+N on signal N).
        ``tty``: on a pseudo-terminal of its own (:meth:`_exec_tty`); ``interactive``: it
        reads our stdin (else /dev/null). Through ``arca-runtime exec`` either way, so a TD's
        execution policy decides first (its refusal is the runtime's message and exit code)."""
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
        proc["terminal"] = tty
        proc.pop("consoleSize", None)  # the container's own (run -t), not this process's
        if tty:
            from arca.host.containers import terminal

            local = terminal.local_terminal()
            rows, cols = (local is not None and terminal.window_size(local)
                          or terminal.DEFAULT_SIZE)
            proc["consoleSize"] = {"height": rows, "width": cols}
        pf = os.path.join(self._dir(rec.id), f"exec-{os.getpid()}.json")
        with open(pf, "w") as f:
            f.write(json_dumps(proc))
        log = os.path.join(self._dir(rec.id), f"exec-{os.getpid()}.log")
        try:
            if tty:
                return self._exec_tty(rec, pf, interactive)
            # runc's own words on stderr as they are (one line); its log says why it could
            # not start the command, for podman's 127 (not found) / 126 (not executable)
            # instead of runc's 255
            code = spawn.run([*runtime_argv(), "--log", log, "--log-format", "json", "exec",
                              "--process", pf, rec.id], no_stdin=not interactive)
            if code == RUNC_CANNOT_EXEC:
                msg = _last_error(log)
                err = _start_failure(rec.name, msg) if msg else None
                if isinstance(err, CommandCannotRun):
                    return err.exit_code
            return code
        finally:
            for path in (pf, log):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    def _exec_tty(self, rec: ContainerRecord, process_file: str, interactive: bool) -> int:
        """``exec -t``: ``arca-runtime exec --detach`` with a console socket, as ``run -t``.
        runc sends the process's terminal here and returns once it runs; as a child subreaper
        we inherit the process, copy its terminal to ours (ours raw with ``-i``, window size
        followed) and reap it."""
        import signal

        from arca.host.containers import terminal

        _set_subreaper()
        os.makedirs(run_dir(), mode=0o700, exist_ok=True)
        # per exec, not per container: several execs may start at once; short for sun_path
        tag = f"exec-{os.getpid()}"
        console = terminal.ConsoleSocket(os.path.join(run_dir(), f"console-{tag}.sock"))
        pidfile = os.path.join(self._dir(rec.id), f"{tag}.pid")
        master = -1
        try:
            code = spawn.run([*runtime_argv(), "exec", "--detach", "--console-socket",
                              console.path, "--pid-file", pidfile, "--process", process_file,
                              rec.id], no_stdin=True)
            if code != 0:
                return code  # the runtime said why on stderr (a policy refusal included)
            with open(pidfile, "rb") as f:
                pid = int(f.read().strip())
            try:
                master = console.receive()
            except OSError as e:
                _kill(pid, signal.SIGKILL)
                _reap(pid)
                raise ContainerError(f"exec in container {rec.name}: the runtime sent no "
                                     f"terminal: {e}") from None
        finally:
            console.close()
            try:
                os.unlink(pidfile)
            except FileNotFoundError:
                pass
        forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
        old = {s: signal.signal(s, lambda s, _f: _kill(pid, s)) for s in forwarded}
        raw = None
        try:
            raw = self._attach_terminal(master, interactive, old)
            terminal.pump(master, pid, out_fd=1, in_fd=0 if interactive else None)
            return _reap(pid)
        except BaseException:
            # nobody would copy its terminal or reap it any more
            _kill(pid, signal.SIGKILL)
            _reap(pid)
            raise
        finally:
            if raw is not None:
                raw.__exit__(None, None, None)
            for s, h in old.items():
                signal.signal(s, h)
            os.close(master)

    def logs(self, ref: str, *, follow: bool = False, tail: int = -1) -> Iterator[bytes]:
        """The container's log; ``tail`` >= 0: only its last ``tail`` lines so far (podman's
        ``--tail``), then, with ``follow``, what comes."""
        rec = self.store.find(ref)
        path = self.log_path(rec.id)
        try:
            f = open(path, "rb")  # noqa: SIM115 - generator closes it
        except FileNotFoundError:
            return
        with f:
            if tail >= 0:
                f.seek(tail_start(f, tail))
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
        obj["bundle"] = self._bundle(rec.id)
        obj["log"] = self.log_path(rec.id)
        obj["labels"] = self.labels(rec.id)
        obj["RestartCount"] = rec.restart_count  # podman's name, for --format
        from arca.host.containers import tdinfo

        obj["td"] = tdinfo.describe(self._dir(rec.id), rec.status, rec.exit_code,
                                    self.log_path(rec.id))
        return obj

    def labels(self, cid: str) -> dict[str, str]:
        try:
            with open(os.path.join(self._dir(cid), LABELS_FILE), "rb") as f:
                obj = json_loads(f.read())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in obj.items()} if isinstance(obj, dict) else {}

    def images_in_use(self, digest: str) -> list[str]:
        return [r.name for r in self.store.list() if r.image_digest == digest]


def tail_start(f: BinaryIO, lines: int, block: int = 65536) -> int:
    """Offset in ``f`` where its last ``lines`` lines begin (a last line without its newline
    counts), read backwards a block at a time: a long log is not read into memory."""
    end = f.seek(0, os.SEEK_END)
    if lines <= 0 or end == 0:
        return end
    f.seek(end - 1)
    pos = end - 1 if f.read(1) == b"\n" else end  # the final newline ends the last line
    while pos > 0:
        start = max(0, pos - block)
        f.seek(start)
        chunk = f.read(pos - start)
        at = len(chunk)
        while (at := chunk.rfind(b"\n", 0, at)) >= 0:
            lines -= 1
            if lines == 0:
                return start + at + 1
        pos = start
    return 0


def _run_capturing_stdout(argv: list[str]) -> tuple[int, bytes]:
    r, w = os.pipe()
    try:
        pid = spawn.spawn(argv, stdout_fd=w, stderr_fd=2)
    finally:
        os.close(w)
    with open(r, "rb") as f:
        out = f.read()
    return spawn.wait(pid), out


def _tee_output(pid: int, out_r: int, err_r: int, log_path: str) -> None:
    """Copy the container's stdout and stderr pipes to ours and (interleaved) to its log until
    the process ``pid`` has exited, then what is left in them (a descendant still holding a
    pipe does not keep us waiting). Our stdout closed (``| head``): the log still gets all."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    pidfd = os.pidfd_open(pid)
    targets = {out_r: 1, err_r: 2}
    try:
        while targets:
            readable = select.select([*targets, pidfd], [], [])[0]
            done = pidfd in readable
            for fd in [f for f in readable if f in targets]:
                if done:
                    os.set_blocking(fd, False)
                if not _copy_pipe(fd, log, targets, drain=done):
                    del targets[fd]
            if done:
                for fd in list(targets):  # the rest, without waiting for EOF
                    os.set_blocking(fd, False)
                    _copy_pipe(fd, log, targets, drain=True)
                break
    finally:
        os.close(pidfd)
        os.close(log)


def _copy_pipe(fd: int, log: int, targets: dict[int, int], *, drain: bool) -> bool:
    """One read of the pipe ``fd`` (``drain``: all it holds; it is non-blocking then) to the log
    and to ``targets[fd]`` while that is ours (-1 once gone); False at EOF."""
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return True
        if not data:
            return False
        os.write(log, data)
        if targets[fd] > 0:
            try:
                os.write(targets[fd], data)
            except OSError:
                targets[fd] = -1  # our side is gone; keep logging
        if not drain:
            return True


def _exited(pid: int) -> int | None:
    """The exit status of our child ``pid`` if it has exited (reaping it), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return 255
    return os.waitstatus_to_exitcode(status) if done else None


    return True


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> int:
    """Exit code of child ``pid`` as a shell reports it (128+N when killed by signal N)."""
    try:
        code = spawn.wait(pid)
    except ChildProcessError:
        return 255  # not our child after all (lost): unknown exit status
    return 128 - code if code < 0 else code


def _last_error(log: str) -> str | None:
    try:
        with open(log, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            obj = json_loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("level") == "error":
            return str(obj.get("msg"))
    return None


#: In a TD container's directory: the uid-range slot reserved for it (ADR 0048).
USERNS_SLOT = "userns-slot"


def _td_userns(d: str, tee: str, plan: network.NetworkPlan) -> str | None:
    """The kept user namespace of the TD's uid range (reserved on first use, kept across
    ``arca start``), in which its private network namespace is made; ``None`` for a plain
    container, a TD without a private network (the runtime then allocates at create) or of a
    backend without user namespaces."""
    if tee == "none" or plan.mode != "private":
        return None
    from arca.host import backends
    from arca.host.runtime import userns

    if not backends.available(tee) or not backends.get(tee).user_namespace:
        return None  # a VM's monitor: no user namespace (ADR 0048)

    path = os.path.join(d, USERNS_SLOT)
    try:
        with open(path, encoding="ascii") as f:
            slot = int(f.read())
        if userns.owner_of(slot) != d:
            raise ValueError("not ours any more")
    except (OSError, ValueError):
        slot = userns.reserve(d)
        with open(path, "w", encoding="ascii") as f:
            f.write(str(slot))
    return os.path.join(userns.REGISTRY, str(slot), userns.USERNS)


def _release_td_userns(d: str) -> None:
    try:
        with open(os.path.join(d, USERNS_SLOT), encoding="ascii") as f:
            slot = int(f.read())
    except (OSError, ValueError):
        return
    from arca.host.runtime import userns

    userns.release(slot, d)
