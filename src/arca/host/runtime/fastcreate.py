"""``create`` of a TEE container done inside the sim platform daemon, for the C front end.

A fresh Python interpreter costs ≈ 30 ms per ``create`` (start-up and imports) before Arca's
≈ 10 ms of work. The sim daemon is a long-lived root process with all of it imported, so the
front end (``frontend.c``) sends it one control request::

    {"op": "create", "stamp": <code stamp>, "argv": [...], "umask": 18, "cwd": "/abs",
     "env": {"ARCA_*": ...}}

and the daemon runs :func:`arca.host.runtime.lifecycle.prepare` (the same function as the
Python path) with the *request's* ``ARCA_*`` environment, umask and working directory,
registering the TD in-process. Answers (one JSON line):

* ``{"create": "ok", "id": ID}``: Arca state is ``creating`` and ``state.created.json`` beside
  it holds the final state; the front end runs ``runc create`` itself (its own stdio, fds, cwd)
  and on success renames that file over ``state.json`` (what the Python path writes at the
  same point), on failure sends ``{"op": "create-undo", ...}`` (same fields) and exits with
  runc's status.
* ``{"create": "runc"}``: no TEE after all: the front end ``exec``s runc.
* ``{"create": "error", "msg": "<one line>"}``: refused; the front end reports it as the
  Python path would (``--log`` JSON line, stderr, exit 1).
* anything else (``{"fallback": why}``, an older daemon's unknown-op error, no answer): the
  front end runs the Python path, which decides everything again.

``{"op": "delete-undo", ...}`` (same fields, ``argv`` a ``delete``): the front end's ``runc
delete`` of a created TEE container succeeded; the daemon runs Arca's part of ``delete`` (the
backend's ``undo``, Arca's files) and answers ``{"delete": "undone"}``. Otherwise the front end
does it without Python (the platform's registration file, Arca's files: a daemon-less host).

Falls back on: a code stamp other than the daemon's (a daemon left running from other
sources), relative paths in the environment or cwd, a run directory other than the daemon's,
``run`` rather than ``create``. Creates are served one at a time (the daemon's one control
thread serves control requests in order), which also makes swapping ``os.environ`` for the
length of a request safe: nothing else in the daemon reads it meanwhile (its device threads
never do).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any

from arca.host import paths
from arca.host.runtime import lifecycle
from arca.host.runtime import machine as sm
from arca.host.runtime import state as st
from arca.host.runtime.cli import split_globals
from arca.host.runtime.config import load_config
from arca.wire.descriptor import LaunchDescriptor
from arca.wire.errors import ArcaError

#: The environment a create depends on (paths, config, runc, default TEE, the vm backend's
#: kernel, QEMU and boot timeout); nothing else of the caller's environment is used by Arca's
#: part of create. frontend.c sends exactly these.
ENV_KEYS = ("ARCA_ROOT", "ARCA_RUN", "ARCA_RUNTIME_CONFIG", "ARCA_RUNC", "ARCA_TEE",
            "ARCA_VM_DATA", "ARCA_VM_QEMU", "ARCA_VM_BOOT_TIMEOUT")
_PATH_KEYS = ("ARCA_ROOT", "ARCA_RUN", "ARCA_RUNTIME_CONFIG")
CREATED_STATE = "state.created.json"
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


def handle(req: dict[str, Any], daemon: Any, stamp: str) -> dict[str, Any]:
    """Answer a ``create``/``create-undo`` request; never raises."""
    try:
        why = _unusual(req, stamp)
        if why:
            return {"fallback": why}
        old = {k: os.environ.get(k) for k in ENV_KEYS}
        old_umask = os.umask(req["umask"])  # files get the caller's modes, as in Python
        try:
            for k in ENV_KEYS:
                os.environ.pop(k, None)
            os.environ.update(req["env"])
            if req["op"] == "create-undo":
                return _undo(req, daemon)
            if req["op"] == "delete-undo":
                return _delete_undo(req, daemon)
            return _create(req, daemon)
        finally:
            os.umask(old_umask)
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    except ArcaError as e:
        return {"create": "error", "msg": " ".join(str(e).split())}
    except Exception as e:  # noqa: BLE001 - one request's failure must not stop the daemon
        return {"create": "error", "msg": f"internal error: {type(e).__name__}: "
                                          f"{' '.join(str(e).split())}"}


def _unusual(req: dict[str, Any], stamp: str) -> str:
    """Why this request should take the Python path instead, or ``""``."""
    if req.get("stamp") != stamp:
        return "sim daemon runs other sources than the runtime (code stamp differs)"
    argv, cwd, env, mask = req.get("argv"), req.get("cwd"), req.get("env"), req.get("umask")
    if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)
            and type(mask) is int and 0 <= mask <= 0o777
            and isinstance(cwd, str) and os.path.isabs(cwd) and isinstance(env, dict)
            and set(env) <= set(ENV_KEYS) and all(isinstance(v, str) for v in env.values())):
        return "malformed create request"
    if any(k in env and not os.path.isabs(env[k]) and (env[k] or k != "ARCA_RUNTIME_CONFIG")
           for k in _PATH_KEYS):
        return "relative path in the ARCA_* environment"
    ours = os.path.realpath(paths.run_dir())
    if os.path.realpath(env.get("ARCA_RUN") or "/run/arca-host") != ours:
        return "run directory is not the daemon's"
    _, i = split_globals(argv)
    want = "delete" if req.get("op") == "delete-undo" else "create"
    if i >= len(argv) or argv[i] != want:
        return f"not a {want}"
    return ""


def _create(req: dict[str, Any], daemon: Any) -> dict[str, Any]:
    argv = req["argv"]
    _, i = split_globals(argv)
    opts = lifecycle.parse_create(argv[i + 1:])
    opts.bundle = os.path.join(req["cwd"], opts.bundle)
    prepared = lifecycle.prepare(load_config(), opts, platform=_InProcess(daemon))
    if prepared is None:
        return {"create": "runc"}
    cid, tee, bundle_path, ref = prepared
    final = st.ContainerState(cid, tee, str(bundle_path), sm.CREATED, ref.measurement)
    try:
        st.write_atomic(st.state_path(cid).parent / CREATED_STATE,
                        json.dumps(final.to_json()).encode())
    except BaseException:
        lifecycle._undo(cid, bundle_path, _InProcess(daemon))
        raise
    return {"create": "ok", "id": cid}


def _undo(req: dict[str, Any], daemon: Any) -> dict[str, Any]:
    """``runc create`` failed after a fast create: undo Arca's part, as the Python path does."""
    argv = req["argv"]
    _, i = split_globals(argv)
    cid = lifecycle.parse_create(argv[i + 1:]).id
    saved = st.load(st.validate_id(cid))
    if saved is not None and saved.status == sm.CREATING:
        lifecycle._undo(cid, pathlib.Path(saved.bundle), _InProcess(daemon))
    return {"create": "undone"}


def _delete_undo(req: dict[str, Any], daemon: Any) -> dict[str, Any]:
    """The front end's ``runc delete`` of a created TEE container succeeded (runc no longer
    has it): the backend's undo and Arca's files, exactly as ``lifecycle.delete`` does."""
    cid = st.validate_id(req["argv"][-1])
    saved = st.load(cid)
    if saved is None:
        return {"delete": "undone"}  # a concurrent delete came first
    if saved.status != sm.CREATED:
        return {"fallback": f"container {cid} is {saved.status}"}
    lifecycle._undo(cid, None, backend=lifecycle._backend(saved, _InProcess(daemon)))
    return {"delete": "undone"}
