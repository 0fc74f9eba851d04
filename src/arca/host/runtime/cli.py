"""``arca-runtime`` command line: runc's command line, with TEE containers diverted.

Global options (``--root --log --log-format [--systemd-cgroup] [--debug]``) are runc's and are
passed through unchanged: the real ``runc`` always receives the exact argument vector this
process received. Commands with nothing for Arca to do (``kill``, ``ps``, ``pause``, ``resume``,
``features``, ``update``, ``start``/``state`` without a TEE, ...) replace this process with runc
(``os.execvp``) before anything heavier than ``os`` is imported, so stdio, console sockets, pid
files and exit codes are runc's own. ``create``, ``delete``, ``exec``, ``run``,
``checkpoint``/``restore`` and ``start``/``state`` of TEE containers are handled in
:mod:`.lifecycle`.

Installed as ``.venv/bin/arca-runtime`` this module sits behind a C front end
(``frontend.c``, ADR 0003, ADR 0046) that makes the same pass-through decisions without
starting Python and hands every other call over: to the running sim daemon, which runs
:func:`.lifecycle.step` for it (:mod:`.fastcreate`), or, with no daemon of the same sources,
to this module with ``python -I -S``. The Python checks here stay complete on their own.

Errors are one line, never a traceback: a JSON line ``{"level":"error","msg":...}`` in the
``--log`` file (what containerd's shim shows as ``OCI runtime create failed: <msg>``) and
``arca-runtime: error: <msg>`` on stderr; exit status 1.
"""

from __future__ import annotations

import os
import sys

# ``typing`` costs ~5 ms to import; annotations are strings here (``from __future__``).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

VERSION = "0.1.0"

#: runc's global flags that take a value, and those that do not (runc 1.1 ``--help``).
_GLOBAL_WITH_VALUE = {"--root", "--log", "--log-format", "--criu", "--rootless"}
_GLOBAL_FLAGS = {"--debug", "--systemd-cgroup", "--help", "-h", "--version", "-v"}
#: Commands Arca handles itself; everything else goes straight to runc.
HANDLED = {"create", "delete", "exec", "run", "checkpoint", "restore", "start", "state"}


def split_globals(argv: list[str]) -> tuple[dict[str, str | bool], int]:
    """Global options before the command, and the index of the command in ``argv``
    (``len(argv)`` when there is none). Accepts ``--opt value``, ``--opt=value`` and Go's
    single-dash spelling, like runc's flag parser."""
    opts: dict[str, str | bool] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg == "-":
            break
        name, eq, value = arg.partition("=")
        if not name.startswith("--") and len(name) > 2:
            name = "-" + name
        if name in _GLOBAL_WITH_VALUE:
            if not eq:
                i += 1
                value = argv[i] if i < len(argv) else ""
            opts[name[2:]] = value
        elif name in _GLOBAL_FLAGS:
            opts[name.lstrip("-")] = True
        else:
            opts[name.lstrip("-")] = value if eq else True
        i += 1
    return opts, min(i, len(argv))


def runc_binary() -> str:
    from arca.host.runtime.config import load_config

    return load_config().runc


def exec_runc(runc: str, argv: list[str]) -> NoReturn:
    """Replace this process with runc, same arguments."""
    try:
        os.execvp(runc, [runc, *argv])  # noqa: S606 - runc takes our argv verbatim
    except OSError as e:
        raise _fatal(f"cannot execute runc binary {runc!r}: {e.strerror}") from None


class _Fatal(Exception):
    pass


def _fatal(msg: str) -> _Fatal:
    return _Fatal(msg)


def report_error(globals_: dict[str, str | bool], msg: str) -> None:
    """Tell the shim (``--log`` file, as runc would) and a human (stderr)."""
    import time

    msg = " ".join(msg.split())  # one line, whatever the cause said
    log = globals_.get("log")
    if isinstance(log, str) and log:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if globals_.get("log-format") == "json":
            import json

            line = json.dumps({"level": "error", "msg": msg, "time": now})
        else:
            line = f'time="{now}" level=error msg="{msg}"'
        try:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, line.encode() + b"\n")
            finally:
                os.close(fd)
        except OSError:
            pass  # stderr below still says it
    try:
        sys.stderr.write(f"arca-runtime: error: {msg}\n")
        sys.stderr.flush()
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    globals_: dict[str, str | bool] = {}
    try:
        globals_, i = split_globals(argv)
        command = argv[i] if i < len(argv) else ""
        if globals_.get("version") and not command:
            return _version()
        if decide(argv) == RUNC:
            exec_runc(runc_binary(), argv)
        from arca.host.runtime import lifecycle

        return lifecycle.dispatch(globals_, command, argv, argv[i + 1 :])
    except _Fatal as e:
        report_error(globals_, str(e))
        return 1
    except Exception as e:  # noqa: BLE001 - the one place turning errors into a message
        from arca.wire.errors import ArcaError

        if isinstance(e, ArcaError):
            report_error(globals_, str(e))
        else:
            report_error(globals_, f"internal error: {type(e).__name__}: {e}")
        return 1
    except KeyboardInterrupt:
        return 130


#: :func:`decide`'s answers.
RUNC, ARCA = "runc", "arca"


def decide(argv: list[str]) -> str:
    """Where a call goes: :data:`RUNC` (``exec`` runc, nothing for Arca to do) or :data:`ARCA`
    (:mod:`.lifecycle`, which may still end in runc after full validation, e.g. ``exec`` of a
    container without Arca state). The C front end (``frontend.c``) makes the RUNC part of
    this decision and hands everything else over (a few calls more than ARCA: it does not read
    Arca's state, only whether there is some);
    ``tests/unit/host/test_runtime_frontend_agreement.py`` fails when the two differ.
    No side effects; cheap for the pass-through cases (``os`` only)."""
    globals_, i = split_globals(argv)
    command = argv[i] if i < len(argv) else ""
    if not command:
        return ARCA if globals_.get("version") else RUNC  # runc's help and usage errors
    if command not in HANDLED:
        return RUNC
    if command in ("create", "run"):
        # The hot path of every plain container (pods' sandboxes, plain workloads).
        return RUNC if _obviously_plain(argv[i + 1:]) else ARCA
    if command == "exec":
        return ARCA  # its id is not the last argument: lifecycle parses it
    if not _has_arca_state(argv[-1], globals_.get("root")):
        # delete/start/state/checkpoint/restore of a container Arca did not make (under this
        # runc root: the same id under another root is another container)
        return RUNC
    if command in ("start", "state"):
        from arca.host.runtime import lifecycle

        return ARCA if lifecycle.arca_handles(command, argv[i + 1:], globals_) else RUNC
    return ARCA


def _obviously_plain(args: list[str]) -> bool:
    """True when ``create``'s bundle plainly asks for no TEE. Anything unusual (no readable
    config.json, odd annotations) answers False: the full path then decides and explains."""
    bundle = "."
    for j, a in enumerate(args):
        if a in ("--bundle", "-bundle", "-b") and j + 1 < len(args):
            bundle = args[j + 1]
        elif a.startswith(("--bundle=", "-bundle=", "-b=")):
            bundle = a.split("=", 1)[1]
    import json

    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            config = json.load(f)
        ann = config.get("annotations") or {}
        joins = [n.get("path") or "" for n in (config.get("linux") or {}).get("namespaces") or []]
    except (OSError, ValueError, AttributeError):
        return False
    if any(isinstance(p, str) and p.endswith(("/ns/pid", "/ns/mnt", "/ns/ipc")) for p in joins):
        return False  # joining a PID, mount or IPC namespace: lifecycle checks it is not a TD's
    if not isinstance(ann, dict):
        return False
    if ann.get("io.kubernetes.cri.container-type") == "sandbox":
        return True
    tee = ann.get("io.arca.tee")
    if tee is None:
        from arca.host.runtime.config import load_config

        tee = load_config().default_tee
    return tee == "none"


def _has_arca_state(container_id: str, root: object = None) -> bool:
    # Same location as ``arca.host.paths.run_dir()`` / ``state.state_path`` (a unit test
    # keeps them equal), spelled with ``os.path`` so plain deletes never import pathlib.
    if not container_id or "/" in container_id or container_id in (".", ".."):
        return False
    run = os.environ.get("ARCA_RUN", "/run/arca-host")
    if not os.path.exists(os.path.join(run, "containers", container_id, "state.json")):
        return False
    # Under another runc root the same id is another container (state.belongs_to).
    try:
        with open(os.path.join(run, "containers", container_id, "runc-root"), "rb") as f:
            recorded = f.read().decode()
    except OSError:
        return True
    return recorded == (root if isinstance(root, str) and root else "/run/runc")


def _version() -> int:
    import subprocess

    print(f"arca-runtime version {VERSION}")
    sys.stdout.flush()
    try:
        return subprocess.call([runc_binary(), "--version"])
    except OSError as e:
        raise _fatal(f"cannot execute runc: {e.strerror}") from None


if __name__ == "__main__":
    sys.exit(main())
