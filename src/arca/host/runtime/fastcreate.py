"""The hand-off: ``arca-runtime`` calls served inside the sim platform daemon, for the C front end.

(Named for its first use, ``create``; it now serves every call the front end does not pass
straight to runc, ADR 0046.) A fresh Python interpreter costs ≈ 30 ms per call (start-up and
imports) before Arca's few milliseconds of work. The sim daemon is a long-lived root process
with all of it imported, so the front end (``frontend.c``) sends it one control request per
step::

    {"op": <step>, "stamp": <code stamp>, "argv": [...], "umask": 18, "cwd": "/abs",
     "env": {"ARCA_*": ...}, "rc": <runc's status, steps after a spawn only>}

and the daemon runs :func:`arca.host.runtime.lifecycle.step` — the same function the Python
path runs in-process — with the *request's* ``ARCA_*`` environment and umask, paths relative
to its ``cwd``, registering TDs in-process. ``op`` is the command (``create``, ``delete``,
``start``, ``state``, ``exec``, ...) or a step that follows a spawn (``create-done``,
``delete-done``, ``exec-done``). Answers (one JSON line, UTF-8; the front end acts on nothing else):

* ``{"do": "runc"}``: the call is runc's after all: exec runc with the caller's argv.
* ``{"do": "exit", "rc": N, "stdout": S, "stderr": E}``: write S and E, exit N.
* ``{"do": "spawn", "args": [...], "then": STEP}``: run runc with ``args`` as a child (its
  own stdio, fds and cwd: the caller's), then send the same request with ``op`` STEP and
  ``rc`` runc's exit status, and act on that answer.
* ``{"do": "error", "msg": "<one line>"}``: refused; reported as the Python path does
  (``--log`` line, stderr, exit 1).
* ``{"do": "python", "why": ...}`` (first step only; likewise no answer at all): the front end
  runs the Python path, which decides everything again in-process.

Falls back to Python on: a code stamp other than the daemon's (a daemon left running from
other sources), relative paths in the environment or cwd, a run directory other than the
daemon's, a step that does not match the command. The daemon serves requests about different
containers at once (issue 13, item 15); it installs a request's ``ARCA_*`` environment and
umask itself, shared by concurrent requests asking for the same ones (``settings``), because
both are process-wide. Called alone, :func:`handle` swaps them for the length of the request.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from arca._internal.environ import restore_environ, swap_environ
from arca.host import paths
from arca.host.runtime import lifecycle
from arca.host.runtime.cli import HANDLED, split_globals
from arca.wire.descriptor import LaunchDescriptor
from arca.wire.errors import ArcaError

#: The environment a create depends on (paths, config, runc, default TEE, the vm backend's
#: kernel, QEMU and boot timeout); nothing else of the caller's environment is used by Arca's
#: part of create. frontend.c sends exactly these.
ENV_KEYS = ("ARCA_ROOT", "ARCA_RUN", "ARCA_RUNTIME_CONFIG", "ARCA_RUNC", "ARCA_TEE",
            "ARCA_VM_DATA", "ARCA_VM_QEMU", "ARCA_VM_BOOT_TIMEOUT")
_PATH_KEYS = ("ARCA_ROOT", "ARCA_RUN", "ARCA_RUNTIME_CONFIG")
_SRC = pathlib.Path(__file__).resolve().parents[3]


def code_stamp(src: pathlib.Path = _SRC) -> str:
    """sha256 of the sources the fast path runs (runtime, sim platform, every backend module
    and package, front end), in path order: ``scripts/setup.sh`` compiles the same value into
    the front end, so a daemon started from other sources than the front end's is never asked
    to create."""
    h = hashlib.sha256()
    files = [*(src / "arca/host/runtime").glob("*.py"), *(src / "arca/host/simtee").glob("*.py"),
             *(src / "arca/host/backends").rglob("*.py"), src / "arca/host/runtime/frontend.c"]
    for f in sorted(files, key=lambda p: str(p.relative_to(src)).encode()):
        h.update(f.read_bytes())
    return h.hexdigest()


class _InProcess:
    """``register``/``unregister`` as in ``simtee.client``, straight into the daemon."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon

    def register(self, td_id: str, descriptor: dict[str, Any], init_data: bytes | None,
                 launch: dict[str, Any] | None = None) -> None:
        self.daemon.register(td_id, LaunchDescriptor.from_json(descriptor), init_data,
                             launch=launch)

    def unregister(self, td_id: str) -> None:
        self.daemon.unregister(td_id)


#: Steps that change a container's files or its registration: the daemon serves those of one
#: container one at a time (``simtee.daemon._KeyedLocks``), like the register/unregister they
#: make. The others (start, state, exec, delete's first step) take no lock, as in Python.
LOCKED_STEPS = ("create", lifecycle.CREATE_DONE, lifecycle.DELETE_DONE)
#: Every step the daemon serves (``op`` of a request).
STEPS = frozenset({*HANDLED, lifecycle.CREATE_DONE, lifecycle.DELETE_DONE, lifecycle.EXEC_DONE})


def handle(req: dict[str, Any], daemon: Any, stamp: str, *,
           settings: Callable[[dict[str, str], int], AbstractContextManager[None]] | None = None
           ) -> dict[str, Any]:
    """Answer one step of a call; never raises. ``settings(env, umask)`` installs the
    request's ``ARCA_*`` environment and umask for the work (the daemon's, shared by concurrent
    requests); without it they are swapped here."""
    try:
        why = _unusual(req, stamp)
        if why:
            return {"do": "python", "why": why}
        if settings is not None:
            with settings(req["env"], req["umask"]):
                return _step(req, daemon)
        old_umask = os.umask(req["umask"])  # files get the caller's modes, as in Python
        old = swap_environ(ENV_KEYS, req["env"])
        try:
            return _step(req, daemon)
        finally:
            os.umask(old_umask)
            restore_environ(old)
    except ArcaError as e:
        return {"do": "error", "msg": " ".join(str(e).split())}
    except Exception as e:  # noqa: BLE001 - one request's failure must not stop the daemon
        return {"do": "error", "msg": f"internal error: {type(e).__name__}: "
                                      f"{' '.join(str(e).split())}"}


def _step(req: dict[str, Any], daemon: Any) -> dict[str, Any]:
    """One request's work, once its environment and umask are installed."""
    return lifecycle.step(req["op"], req["argv"], rc=req.get("rc", 0), cwd=req["cwd"],
                          platform=_InProcess(daemon))


def container_id(req: dict[str, Any]) -> str | None:
    """The container a request of :data:`LOCKED_STEPS` is about (``None``: another step, or
    it does not parse: refused by the step itself)."""
    try:
        if req.get("op") not in LOCKED_STEPS:
            return None
        argv = req["argv"]
        _, i = split_globals(argv)
        parse = lifecycle.parse_delete if argv[i] == "delete" else lifecycle.parse_create
        return str(parse(argv[i + 1:]).id)
    except (ArcaError, KeyError, TypeError, ValueError, IndexError, AttributeError):
        return None


def _unusual(req: dict[str, Any], stamp: str) -> str:
    """Why this request should take the Python path instead, or ``""``."""
    if req.get("stamp") != stamp:
        return "sim daemon runs other sources than the runtime (code stamp differs)"
    op, argv, cwd, env = req.get("op"), req.get("argv"), req.get("cwd"), req.get("env")
    mask, rc = req.get("umask"), req.get("rc", 0)
    if not (isinstance(op, str) and isinstance(argv, list)
            and all(isinstance(a, str) for a in argv)
            and type(mask) is int and 0 <= mask <= 0o777 and type(rc) is int
            and isinstance(cwd, str) and os.path.isabs(cwd) and isinstance(env, dict)
            and set(env) <= set(ENV_KEYS) and all(isinstance(v, str) for v in env.values())):
        return "malformed request"
    if any(k in env and not os.path.isabs(env[k]) and (env[k] or k != "ARCA_RUNTIME_CONFIG")
           for k in _PATH_KEYS):
        return "relative path in the ARCA_* environment"
    ours = os.path.realpath(paths.run_dir())
    if os.path.realpath(env.get("ARCA_RUN") or "/run/arca-host") != ours:
        return "run directory is not the daemon's"
    _, i = split_globals(argv)
    command = argv[i] if i < len(argv) else ""
    if command not in HANDLED or op not in (command, f"{command}-done"):
        return f"step {op!r} of {command!r}"
    return ""
