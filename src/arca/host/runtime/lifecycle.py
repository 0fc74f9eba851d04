"""What ``arca-runtime`` does around runc for ``create``, ``delete``, ``exec`` and friends.

``create`` of a TEE container (contract §3), in order, so that ``delete --force`` can undo any
prefix of it after a crash (even ``kill -9``):

1. validate the bundle (config.json, rootfs, TEE, process, init-data) — no side effects yet;
2. record Arca state ``creating`` (from here on, ``delete`` knows there is something to undo);
3. guest runtime, rootfs digest, launch descriptor; write the TD directory
   (``descriptor.json``, ``process.json``, ``init-data.toml``);
4. register the TD with the sim platform (which creates ``sim.sock`` in the TD directory);
5. rewrite ``config.json`` atomically (the original is kept beside Arca's state);
6. run ``runc run --detach`` with the caller's ``create`` options and inherited fds: runc's
   create and, at once, its start ("prestart"), so the agent does its work (evidence, KBS,
   secrets) while the orchestrator goes from ``create`` to ``start``; it then waits on the
   ``go`` FIFO that step 3 made in the TD directory. On failure undo 2-5 and return runc's
   status (runc already logged why and removed its container).

``start`` of such a container writes one byte to ``go`` (the agent then execs the workload)
and records ``released``; before that, ``state`` says ``created`` (runc would say running),
``delete`` without ``--force`` kills it (as runc does with created containers) and ``kill``
reaches the agent. A second ``start`` is runc's (it refuses a running container).

Every command is a sequence of :func:`step` calls, each answering what the caller does next
(exec runc, exit, or run runc as a child and come back with its status): ``create`` is steps
1-5 and then runc's ``run --detach`` (step 6) followed by ``create-done`` (record CREATED or
undo). The same steps run here for the Python path (:func:`dispatch`) and in the sim daemon for
the C front end (:mod:`.fastcreate`, ADR 0046), which only carries out the answers.

``delete`` runs ``runc delete`` and then removes the registration and all Arca state once runc
no longer has the container. Everything here refuses in one line via ``ArcaError``.
"""

from __future__ import annotations

import json
import os
import pathlib

from arca.errors import ArcaError, InvalidInput, PolicyDenied, StateError  # noqa: F401
from arca.host.runtime import machine as sm
from arca.host.runtime import state as st
from arca.host.runtime.config import RuntimeConfig, load_config

TYPE_CHECKING = False  # ``typing`` costs ~3 ms per arca-runtime call
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from arca.host.backends.base import Backend, Launch, Reference

# Bundle parsing, descriptors and policies are imported inside ``create``: ``delete`` and
# ``exec`` of every container pass through here and must not pay for them.

#: runc's default state root when the caller gives no ``--root``.
DEFAULT_RUNC_ROOT = "/run/runc"
ORIGINAL_CONFIG = "config.orig.json"


def _parser(command: str, *, with_id: bool = True) -> Any:
    """An argparse parser (for ``exec``) that raises instead of printing usage and exiting
    (errors are one line). argparse is imported here, not at module level."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> Any:  # type: ignore[override]
            raise InvalidInput(f"{self.prog}: {message}")

    p = _Parser(prog=f"arca-runtime {command}", add_help=False, allow_abbrev=False)
    if with_id:
        p.add_argument("id")
    return p


class Args:
    """Parsed ``create``/``delete`` options (an ``argparse.Namespace`` look-alike)."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    # As typeshed's Namespace: attributes are dynamic, typed Any.
    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__[name] = value


#: ``create``/``run`` options (runc 1.1): spelling -> (attribute, default). A ``bool`` default
#: marks a flag, anything else an option with a value. ``--detach``/``--keep``: ``run`` only.
_CREATE_OPTS: dict[str, tuple[str, Any]] = {
    "--bundle": ("bundle", "."), "-b": ("bundle", "."), "--pid-file": ("pid_file", None),
    "--console-socket": ("console_socket", None), "--no-pivot": ("no_pivot", False),
    "--no-new-keyring": ("no_new_keyring", False), "--preserve-fds": ("preserve_fds", 0),
    "--detach": ("detach", False), "-d": ("detach", False), "--keep": ("keep", False),
}
_DELETE_OPTS: dict[str, tuple[str, Any]] = {"--force": ("force", False), "-f": ("force", False)}


def _parse(command: str, args: list[str], spec: dict[str, tuple[str, Any]]) -> Args:
    """runc's ``<command> [options] <id>`` without argparse (~5 ms of imports on every
    create and delete): ``--opt value``, ``--opt=value``, Go's ``-opt``, flags, one id."""
    values = {dest: default for dest, default in spec.values()}
    ids: list[str] = []
    rest = iter(_go_flags(args))
    for arg in rest:
        name, eq, value = arg.partition("=")
        if arg == "--":
            ids += rest
        elif not arg.startswith("-") or arg == "-":
            ids.append(arg)
        elif name not in spec or (eq and isinstance(spec[name][1], bool)):
            raise InvalidInput(f"arca-runtime {command}: unrecognized arguments: {arg}")
        elif isinstance(spec[name][1], bool):
            values[spec[name][0]] = True
        else:
            if not eq:
                following = next(rest, None)
                if following is None:
                    raise InvalidInput(f"arca-runtime {command}: argument {name}: expected "
                                       "one argument")
                value = following
            values[spec[name][0]] = value
    if len(ids) != 1:
        raise InvalidInput(f"arca-runtime {command}: expected one container id, got {ids}")
    if "preserve_fds" in values:
        try:
            values["preserve_fds"] = int(values["preserve_fds"])
        except ValueError:
            raise InvalidInput(f"arca-runtime {command}: argument --preserve-fds: invalid "
                               f"int value: {values['preserve_fds']!r}") from None
    return Args(id=ids[0], **values)


def parse_create(args: list[str]) -> Args:
    return _parse("create", args, _CREATE_OPTS)


def parse_delete(args: list[str]) -> Args:
    return _parse("delete", args, _DELETE_OPTS)


def parse_exec(args: list[str]) -> argparse.Namespace:
    import argparse

    p = _parser("exec", with_id=False)
    p.add_argument("--process", "-p")
    p.add_argument("--detach", "-d", action="store_true")
    p.add_argument("--pid-file")
    p.add_argument("--console-socket")
    p.add_argument("--tty", "-t", action="store_true")
    p.add_argument("--cwd")
    p.add_argument("--env", "-e", action="append", default=[])
    p.add_argument("--user", "-u")
    p.add_argument("--additional-gids", "-g", action="append", default=[])
    p.add_argument("--cap", "-c", action="append", default=[])
    p.add_argument("--no-new-privs", action="store_true")
    p.add_argument("--apparmor")
    p.add_argument("--process-label")
    p.add_argument("--preserve-fds", type=int, default=0)
    p.add_argument("--cgroup", action="append", default=[])
    p.add_argument("--ignore-paused", action="store_true")
    p.add_argument("id")
    p.add_argument("command", nargs=argparse.REMAINDER)
    ns: argparse.Namespace = p.parse_args(_go_flags(args))
    return ns


def _go_flags(args: list[str]) -> list[str]:
    """Go's flag package also accepts ``-flag``; argparse wants ``--flag`` for long names."""
    return [f"-{a}" if a.startswith("-") and not a.startswith("--") and len(a.split("=")[0]) > 2
            else a for a in args]


class PassThrough(Exception):  # noqa: N818 - a decision, not an error
    """This call is runc's after all (a plain container, a second ``start``, ...): the caller
    execs runc with its own argument vector. Raised, never exec'd here, because the sim daemon
    runs this module for the C front end: it answers ``runc`` instead (see :func:`step`)."""


#: :func:`step`'s answers (``do``): exec runc with the caller's argv; exit with ``rc`` after
#: writing ``stdout``/``stderr``; run runc as a child with ``args`` (every fd inherited) and
#: come back with its status as step ``then``. Errors are ``ArcaError``s (the daemon answers
#: ``{"do": "error", "msg"}``). The CLI (:func:`dispatch`), the daemon
#: (:mod:`.fastcreate`) and the C front end carry out the same answers.
RUNC, EXIT, SPAWN = "runc", "exit", "spawn"
#: The steps that follow a ``spawn`` (``rc``: runc's exit status).
CREATE_DONE, DELETE_DONE, EXEC_DONE = "create-done", "delete-done", "exec-done"
#: Beside ``state.json`` during a create: the state to record once runc succeeded.
CREATED_STATE = "state.created.json"


def _exit(rc: int, stdout: str = "", stderr: str = "") -> dict[str, Any]:
    return {"do": EXIT, "rc": rc, "stdout": stdout, "stderr": stderr}


def _spawn(args: list[str], then: str) -> dict[str, Any]:
    return {"do": SPAWN, "args": args, "then": then}


def step(op: str, argv: list[str], *, rc: int = 0, cwd: str | None = None,
         platform: Any = None) -> dict[str, Any]:
    """One step of ``arca-runtime <argv>``: what the caller does next (the answers above).
    ``op`` is the command (``argv``'s) or a step that follows a ``spawn``; relative paths in
    ``argv`` are relative to ``cwd`` (the caller's: the daemon runs elsewhere); ``platform``
    is the sim daemon when it runs this (it registers TDs in-process). All of the runtime's
    state logic is here: the front end only decides what is plainly runc's and hands the rest
    over (ADR 0046). Raises ``ArcaError`` with one line when refused."""
    from arca.host.runtime.cli import split_globals

    globals_, i = split_globals(argv)
    command, args = (argv[i] if i < len(argv) else ""), argv[i + 1:]
    cfg = load_config()
    try:
        if op == CREATE_DONE and command == "create":
            return _create_done(globals_, parse_create(args), rc, platform)
        if op == DELETE_DONE and command == "delete":
            return _delete_done(globals_, parse_delete(args), rc, platform)
        if op == EXEC_DONE and command == "exec":
            return _exec_done(globals_, argv, parse_exec(args), rc)
        if op != command:
            raise InvalidInput(f"arca-runtime: step {op!r} does not follow {command!r}")
        if command in ("create", "run"):
            opts = parse_create(args)
            if cwd is not None:
                opts.bundle = os.path.join(cwd, opts.bundle)
            return create(cfg, globals_, argv, opts, run=command == "run", platform=platform)
        if command == "delete":
            return delete(cfg, globals_, argv, parse_delete(args))
        if command == "exec":
            return exec_(cfg, argv, parse_exec(args), cwd)
        if command in ("start", "state"):
            return (start if command == "start" else state)(cfg, globals_, argv, args)
        if command in ("checkpoint", "restore"):
            # The container id is the last argument.
            cid = args[-1] if args else ""
            if _safe_load(cid, globals_) is not None:
                raise StateError(f"{command} of TEE container {cid} refused: a trust domain's "
                                 "memory must not be written to host disk")
        raise PassThrough  # not a command Arca handles (cli.decide sends none here)
    except PassThrough:
        return {"do": RUNC}


def dispatch(globals_: dict[str, str | bool], command: str, argv: list[str],
             args: list[str]) -> int:
    """The Python path: carry out :func:`step`'s answers in this process."""
    from arca.host.runtime.cli import exec_runc

    answer = step(command, argv)
    while answer["do"] == SPAWN:
        try:
            rc = _run_runc(load_config().runc, answer["args"])
        except ArcaError:
            step(answer["then"], argv, rc=127)  # runc never ran: undo what the step did
            raise
        answer = step(answer["then"], argv, rc=rc)
    if answer["do"] == RUNC:
        exec_runc(load_config().runc, argv)
    import sys

    for stream, text in ((sys.stdout, answer["stdout"]), (sys.stderr, answer["stderr"])):
        if text:
            stream.buffer.write(text.encode())
            stream.flush()
    return int(answer["rc"])


def _safe_load(container_id: str, globals_: dict[str, str | bool] | None = None
               ) -> st.ContainerState | None:
    """Arca state of the container, ``None`` when there is none under the caller's runc root
    (``globals_``; the same id under another root is another container)."""
    try:
        saved = st.load(st.validate_id(container_id))
    except InvalidInput:
        return None
    if saved is not None and globals_ is not None and not st.belongs_to(
            container_id, st.runc_root(globals_)):
        return None
    return saved


# -- create -----------------------------------------------------------------------------------


def create(cfg: RuntimeConfig, globals_: dict[str, str | bool], argv: list[str],
           opts: Args, *, run: bool = False, platform: Any = None) -> dict[str, Any]:
    """Steps 1-5 (:func:`prepare`), then step 6 for the caller to run: create and prestart
    in one runc process (``run --detach`` takes every ``create`` option and saves a second
    runc start-up, ~10 ms, on the way to the agent; runc destroys what it made when it
    fails), then :data:`CREATE_DONE`."""
    opts.root = st.runc_root(globals_)
    prepared = prepare(cfg, opts, run=run, platform=platform)
    if prepared is None:
        raise PassThrough
    cid, tee, bundle_path, ref = prepared
    final = st.ContainerState(cid, tee, str(bundle_path), sm.CREATED, ref.measurement)
    try:
        st.write_atomic(st.state_path(cid).parent / CREATED_STATE,
                        json.dumps(final.to_json()).encode())
    except BaseException:
        _undo(cid, bundle_path, platform)
        raise
    ci = _command_index(argv)
    return _spawn([*argv[:ci], "run", "--detach", *argv[ci + 1:]], CREATE_DONE)


def _create_done(globals_: dict[str, str | bool], opts: Args, rc: int,
                 platform: Any = None) -> dict[str, Any]:
    """runc's ``run --detach`` ended with ``rc``: record CREATED, or undo Arca's part."""
    cid = st.validate_id(opts.id)
    saved = _safe_load(cid, globals_)
    if saved is None or saved.status != sm.CREATING:
        # A `delete --force` came between (it undid Arca's part): runc's container is
        # nobody's now, so this create did not happen as far as Arca is concerned.
        if rc == 0:
            raise StateError(f"container {cid} was deleted while it was being created")
        return _exit(rc)
    if rc != 0:
        _undo(cid, pathlib.Path(saved.bundle), platform)
        return _exit(rc)
    sm.require(cid, sm.CREATING, "created")
    try:
        os.rename(st.state_path(cid).parent / CREATED_STATE, st.state_path(cid))
    except OSError as e:
        raise StateError(f"cannot record the state of container {cid}: {e.strerror}") from None
    return _exit(0)


def prepare(cfg: RuntimeConfig, opts: Args, *, run: bool = False,
            platform: Any = None) -> tuple[str, str, pathlib.Path, Reference] | None:
    """Arca's part of ``create``, everything before ``runc create`` (steps 1-5 above); undone
    on failure. ``None`` when the bundle asks for no TEE (plain runc). ``platform`` is handed
    to the backend (:class:`arca.host.backends.base.Backend`): the sim daemon passes itself
    when it runs this for the C front end (ADR 0003)."""
    from arca.host import backends
    from arca.host.runtime.bundle import (
        BundleError,
        decode_init_data,
        original_process,
        process_spec,
        read_bundle,
        select_tee,
    )

    bundle = read_bundle(pathlib.Path(opts.bundle).absolute())
    tee = select_tee(bundle, cfg.default_tee)
    from arca.host.runtime import tdchecks

    if tee == "none":
        tdchecks.check_joiner(str(opts.id), bundle.config)
        return None
    if run:
        raise InvalidInput("'run' is not supported for TEE containers: use create and start")
    backend = backends.get(tee, platform=platform)  # select_tee ran its check_host
    cid = st.validate_id(opts.id)
    root = getattr(opts, "root", None) or st.DEFAULT_RUNC_ROOT
    if st.load(cid) is not None:
        raise StateError(f"container {cid} already exists" + (
            "" if st.belongs_to(cid, root) else " (a TEE container under another runc root)"))
    rootfs = bundle.rootfs()
    if not rootfs.is_dir():
        raise BundleError(f"rootfs {rootfs} does not exist (root.path in {bundle.path})")
    init_data = decode_init_data(bundle)
    spec = process_spec(original_process(bundle))
    tdchecks.check_launch(cid, bundle.config, init_data, str(rootfs), root)
    if init_data is not None:
        # Parts the measured execution policy declares variable are not measured (issue 5).
        # Without init-data the policy is empty and changes nothing: skip its imports.
        from arca.host.runtime.execpolicy import measured_process, policy_of

        spec = measured_process(spec, policy_of(init_data))

    st.save(st.ContainerState(cid, tee, str(bundle.path), sm.CREATING))
    try:
        st.record_root(cid, root)
        ref = _prepare(backend, cid, bundle.path, bundle.config, rootfs, spec, init_data)
    except BaseException:
        _undo(cid, bundle.path, backend=backend)
        raise
    return cid, tee, bundle.path, ref


def _prepare(backend: Backend, cid: str, bundle_path: pathlib.Path, config: dict[str, Any],
             rootfs: pathlib.Path, spec: Any, init_data: bytes | None) -> Reference:
    """Steps 3-5: the backend's reference values (the same call as ``arca measure``), the TD
    directory with the ``go`` FIFO, the backend's launch, and the config.json rewrite."""
    from arca.host.backends.base import Launch, LaunchInputs
    from arca.host.guestruntime import ensure_guest_runtime

    inputs = LaunchInputs(rootfs, spec, init_data, ensure_guest_runtime(), config)
    ref = backend.reference(inputs)
    td = st.td_dir(cid)
    st.ensure_private_dir(td.parent, 0o700)  # see simtee.daemon._listen
    td.mkdir(mode=0o755, exist_ok=True)
    os.chmod(td, 0o755)  # noqa: S103 - bind-mounted into the TD, read by its non-root user
    go = td / st.GO_FIFO
    go.unlink(missing_ok=True)
    os.mkfifo(go, 0o600)  # root-only: the agent (root until it execs) reads, the host writes
    new = backend.prepare(Launch(cid, bundle_path, td), inputs, ref, config)
    cfg_path = bundle_path / "config.json"
    mode = cfg_path.stat().st_mode & 0o777
    st.write_atomic(st.state_path(cid).parent / ORIGINAL_CONFIG, json.dumps(config).encode())
    st.write_atomic(cfg_path, json.dumps(new).encode(), mode)
    return ref


def _command_index(argv: list[str]) -> int:
    from arca.host.runtime.cli import split_globals

    return split_globals(argv)[1]


def _run_runc(runc: str, argv: list[str]) -> int:
    """Run runc as a child with every fd inherited (the shim may hand over extra fds), and
    return its exit status. ``posix_spawnp`` rather than ``subprocess``: same semantics here,
    without importing ``subprocess`` on every create and delete."""
    try:
        pid = os.posix_spawnp(runc, [runc, *argv], os.environ)
    except OSError as e:
        raise ArcaError(f"cannot execute runc binary {runc!r}: {e.strerror}") from None
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            return 1
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(
        status)


def _backend(saved: st.ContainerState, platform: Any = None) -> Backend:
    from arca.host import backends

    return backends.get(saved.tee, platform=platform)


def _launch(saved: st.ContainerState) -> Launch:
    from arca.host.backends.base import Launch

    return Launch(saved.id, pathlib.Path(saved.bundle), st.td_dir(saved.id))


def _undo(cid: str, bundle_path: pathlib.Path | None, platform: Any = None, *,
          backend: Backend | None = None) -> None:
    """Undo every side effect of ``create`` (any prefix of it); idempotent. The backend is
    the one the state names (state is written before any side effect)."""
    if backend is None:
        saved = _safe_load(cid)
        backend = _backend(saved, platform) if saved is not None else None
    if backend is not None:
        backend.undo(cid)
    orig = st.state_path(cid).parent / ORIGINAL_CONFIG
    if bundle_path is not None and orig.exists() and bundle_path.is_dir():
        try:
            st.write_atomic(bundle_path / "config.json", orig.read_bytes(), 0o644)
        except OSError:
            pass  # the bundle is going away anyway
    st.remove(cid)


# -- delete -----------------------------------------------------------------------------------


def runc_has(globals_: dict[str, str | bool], cid: str) -> bool:
    root = globals_.get("root")
    root = root if isinstance(root, str) and root else DEFAULT_RUNC_ROOT
    return os.path.exists(os.path.join(root, cid, "state.json"))


#: How long ``delete`` waits for an orphaned ``runc create`` of the same container to finish.
INFLIGHT_CREATE_TIMEOUT_S = 10.0


def inflight_creates(cid: str) -> list[int]:
    """Pids of live ``... create ... <cid>`` or ``... run --detach ... <cid>`` processes: an
    orphaned runc child of a killed create (step 6 is ``run --detach``, possibly behind a
    wrapper still starting it) or a concurrent ``arca-runtime create`` of the same container
    (the id is the last argument)."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                args = f.read().split(b"\0")[:-1]
        except OSError:
            continue
        if len(args) > 2 and args[-1] == cid.encode() and int(entry.name) != os.getpid() \
                and _is_create(args[:-1]):
            pids.append(int(entry.name))
    return pids


def _is_create(args: list[bytes]) -> bool:
    return b"create" in args or (b"run" in args and (b"--detach" in args or b"-d" in args))


def wait_for_inflight_create(cid: str, timeout: float = INFLIGHT_CREATE_TIMEOUT_S) -> None:
    import time

    deadline = time.monotonic() + timeout
    while inflight_creates(cid) and time.monotonic() < deadline:
        time.sleep(0.02)


def delete(cfg: RuntimeConfig, globals_: dict[str, str | bool], argv: list[str],
           opts: Args) -> dict[str, Any]:
    """runc's ``delete`` for the caller to run (with ``--force`` added for a prestarted agent
    that was never released), then :data:`DELETE_DONE`."""
    cid = opts.id
    saved = _safe_load(cid, globals_)
    if saved is None:
        st.remove_half_made(cid)  # a create killed inside its first state write
        raise PassThrough
    if saved.status != "created":
        # A create that crashed (or was killed) may have left its ``runc create`` child
        # running; deleting under it would let it finish a container nobody knows about.
        wait_for_inflight_create(cid)
    i = _command_index(argv)
    if not opts.force and st.unreleased(cid):
        # Prestarted (or maybe, when create was killed half-way), never started: runc sees a
        # running container and would refuse; runc itself kills a created one on delete.
        argv = [*argv[:i + 1], "--force", *argv[i + 1:]]
    return _spawn(argv, DELETE_DONE)


def _delete_done(globals_: dict[str, str | bool], opts: Args, rc: int,
                 platform: Any = None) -> dict[str, Any]:
    cid = opts.id
    saved = _safe_load(cid, globals_)
    if rc == 0 or not runc_has(globals_, cid):
        # runc no longer has the container (deleted now, or a create that never reached it):
        # nothing can use the TD any more, so its registration and files go.
        if saved is not None:
            _undo(cid, None, backend=_backend(saved, platform))
        return _exit(0)
    return _exit(rc)


# -- start and state --------------------------------------------------------------------------

#: How long ``start`` waits for a live agent to open ``go`` (it does so right after its
#: interpreter started; this only bounds a wedged one).
AGENT_READY_TIMEOUT_S = 10.0


def _prestarted(cid: str, globals_: dict[str, str | bool] | None = None) -> bool:
    return _state_of(cid, globals_) == sm.CREATED


def _state_of(cid: str, globals_: dict[str, str | bool] | None = None) -> str:
    """The container's lifecycle state (:mod:`.machine`) as the caller sees it: an id Arca
    could not have state for, or whose state is that of the same id under another runc root
    (``globals_``), is runc's business (ABSENT)."""
    return sm.of(_safe_load(cid, globals_))


def arca_handles(command: str, args: list[str],
                 globals_: dict[str, str | bool] | None = None) -> bool:
    """Whether ``start``/``state`` with ``args`` under the runc root of ``globals_`` is Arca's
    (else runc's own, unchanged): ``start`` of a container in CREATING (refused) or CREATED
    (released); ``state`` of one in CREATED (read as ``created``) or with corrupt state
    (refused). The C front end hands every ``start``/``state`` of a container with Arca state
    over, so this runs in Python for it too (ADR 0046)."""
    if len(args) != 1:
        return False  # odd arguments: runc's own message
    try:
        now = _state_of(args[0], globals_)
    except StateError:
        return True  # corrupt: said so, in one line
    if command == "start":
        return now in (sm.CREATING, sm.CREATED)
    return now == sm.CREATED


def start(cfg: RuntimeConfig, globals_: dict[str, str | bool], argv: list[str],
          args: list[str]) -> dict[str, Any]:
    """Release the prestarted agent of a TEE container; anything else is runc's ``start``."""
    if not arca_handles("start", args, globals_):
        raise PassThrough  # a plain container, a second start, odd arguments: runc's
    cid = args[0]
    sm.require(cid, _state_of(cid, globals_), "start")
    try:  # at most one start releases; a second one gets runc's answer (already running)
        os.close(os.open(st.released_path(cid), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise PassThrough from None
    release(globals_, cid)
    return _exit(0)


def release(globals_: dict[str, str | bool], cid: str,
            timeout: float = AGENT_READY_TIMEOUT_S) -> None:
    """The backend's ``release`` of a prestarted TD (the ``go`` FIFO protocol); in the sim
    daemon when the C front end handed ``start`` over."""
    saved = _safe_load(cid, globals_)
    if saved is None:
        raise StateError(f"container {cid} does not exist")
    _backend(saved).release(_launch(saved), _init_pid(globals_, cid), timeout)


def _init_pid(globals_: dict[str, str | bool], cid: str) -> int:
    """The container's init (the agent) from runc's state, 0 when unknown."""
    root = globals_.get("root")
    root = root if isinstance(root, str) and root else DEFAULT_RUNC_ROOT
    try:
        with open(os.path.join(root, cid, "state.json"), "rb") as f:
            return int(json.load(f).get("init_process_pid") or 0)
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def state(cfg: RuntimeConfig, globals_: dict[str, str | bool], argv: list[str],
          args: list[str]) -> dict[str, Any]:
    """runc's ``state``, but ``created`` for a prestarted TEE container not yet started."""
    if not arca_handles("state", args, globals_):
        raise PassThrough
    cid = args[0]
    _state_of(cid, globals_)  # corrupt state: refused in one line before runc runs
    import subprocess

    try:
        res = subprocess.run([cfg.runc, *argv], capture_output=True, check=False)
    except OSError as e:
        raise ArcaError(f"cannot execute runc binary {cfg.runc!r}: {e.strerror}") from None
    out = res.stdout
    if res.returncode == 0 and _prestarted(cid, globals_):  # again: ``start`` may have come
        out = out.replace(b'"status": "running"', b'"status": "created"', 1)
    return _exit(res.returncode, out.decode(errors="replace"),
                 res.stderr.decode(errors="replace"))


# -- exec -------------------------------------------------------------------------------------


def check_exec_allowed(state: st.ContainerState, process: dict[str, Any]) -> None:
    """Decide whether the host may start ``process`` inside the TD of ``state``.

    Raise :class:`PolicyDenied` to refuse: allowed only when the TD's measured init-data
    execution policy sets ``allow_exec`` (:mod:`.execpolicy`).
    """
    _backend(state).check_exec(_launch(state), process)


def exec_(cfg: RuntimeConfig, argv: list[str], opts: argparse.Namespace,
          cwd: str | None = None) -> dict[str, Any]:
    """Refuse an ``exec`` the TD's policy does not allow; otherwise it is runc's."""
    from arca.host.runtime.cli import split_globals

    globals_ = split_globals(argv)[0]
    saved = _safe_load(opts.id, globals_)
    if saved is None:
        from arca.host.runtime.tdchecks import check_exec_without_state

        check_exec_without_state(opts.id, st.runc_root(globals_))
    if saved is not None:
        sm.require(saved.id, sm.of(saved), "exec")
        process: dict[str, Any] = {}
        if opts.process:
            try:
                with open(os.path.join(cwd or "", opts.process), "rb") as f:
                    process = json.load(f)
            except (OSError, ValueError) as e:
                raise InvalidInput(f"cannot read exec process file {opts.process}: {e}") from None
        else:
            process = _command_line_process(saved, opts)
        if not isinstance(process, dict):
            raise InvalidInput(f"exec process file {opts.process} must hold a JSON object")
        check_exec_allowed(saved, process)
        replaced = _backend(saved).exec_process(_launch(saved), process)
        if replaced is not None:
            return _spawn(_with_process(argv, opts, replaced, saved), EXEC_DONE)
    raise PassThrough


def _command_line_process(saved: st.ContainerState, opts: argparse.Namespace
                          ) -> dict[str, Any]:
    """The process of ``runc exec ID CMD...`` (no ``--process``), built as runc builds it: the
    container's own process (its original ``config.json``, before a backend rewrote it) with
    ``args`` = CMD, ``--env`` appended, ``--cwd``, ``--user``, ``--additional-gids``,
    ``--tty``, ``--cap`` and ``--no-new-privs`` applied. A backend that replaces the process
    (``vm``) then gets the same object a ``--process`` caller would have written."""
    if not opts.command:
        raise InvalidInput(f"arca-runtime exec {saved.id}: no command and no --process")
    try:
        with open(st.state_path(saved.id).parent / ORIGINAL_CONFIG, "rb") as f:
            base = json.load(f).get("process") or {}
    except (OSError, ValueError, AttributeError):
        base = {}
    process: dict[str, Any] = {k: v for k, v in base.items()
                               if k not in ("args", "commandLine", "consoleSize")}
    process.update(args=list(opts.command), terminal=bool(opts.tty),
                   env=[*(base.get("env") or []), *opts.env], cwd=opts.cwd or base.get("cwd")
                   or "/")
    user = dict(process.get("user") or {"uid": 0, "gid": 0})
    if opts.user:
        uid, _, gid = opts.user.partition(":")
        if not uid.isdigit() or not (gid.isdigit() or not gid):
            raise InvalidInput(f"arca-runtime exec: --user {opts.user!r} is not UID[:GID]")
        user = {"uid": int(uid), "gid": int(gid or 0)}
    if opts.additional_gids:
        if not all(g.isdigit() for g in opts.additional_gids):
            raise InvalidInput("arca-runtime exec: --additional-gids must be numbers")
        user["additionalGids"] = [int(g) for g in opts.additional_gids]
    process["user"] = user
    if opts.cap:
        caps = dict(process.get("capabilities") or {})
        for kind in ("bounding", "effective", "permitted"):
            caps[kind] = [*(caps.get(kind) or []), *opts.cap]
        process["capabilities"] = caps
    if opts.no_new_privs:
        process["noNewPrivileges"] = True
    return process


def _exec_file(saved: st.ContainerState, argv: list[str]) -> pathlib.Path:
    """Where the rewritten process of the exec ``argv`` waits for runc: in the TD's own
    root-only directory (gone with the container), named by the call so :data:`EXEC_DONE`
    finds it again (containerd and arca name a new process file for every exec)."""
    import hashlib

    digest = hashlib.sha256(json.dumps(argv).encode()).hexdigest()[:24]
    return st.td_dir(saved.id) / f"exec-{digest}.json"


def _with_process(argv: list[str], opts: argparse.Namespace, process: dict[str, Any],
                  saved: st.ContainerState) -> list[str]:
    """``argv`` with ``--process`` naming ``process`` (written to :func:`_exec_file`; runc runs
    as the caller's child and :data:`EXEC_DONE` removes it: the sim daemon may be the one
    answering, so no file descriptor of this process can carry it)."""
    path = _exec_file(saved, argv)
    st.write_atomic(path, json.dumps(process).encode(), 0o600)
    if not opts.process:  # ``exec [OPTIONS] ID CMD...``: the id and CMD end argv
        head = argv[:len(argv) - len(opts.command) - 1]
        return [*head, "--process", str(path), opts.id]
    out = list(argv)
    for i, arg in enumerate(out):  # the option precedes the id and any command
        name, eq, _ = arg.partition("=")
        if name in ("--process", "-process", "-p"):
            if eq:
                out[i] = f"{name}={path}"
            else:
                out[i + 1] = str(path)
            break
    return out


def _exec_done(globals_: dict[str, str | bool], argv: list[str], opts: argparse.Namespace,
               rc: int) -> dict[str, Any]:
    """After runc ran a rewritten exec: drop its process file, exit with runc's status."""
    saved = _safe_load(opts.id, globals_)
    if saved is not None:
        try:
            _exec_file(saved, argv).unlink()
        except FileNotFoundError:
            pass
    return _exit(rc)
