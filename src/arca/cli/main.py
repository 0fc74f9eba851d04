"""Entry point of ``arca``. Each command group lives in its own module with ``register(app)``.

The common forms of the container commands (``arca run`` ...) skip typer: see
:mod:`arca.cli.fastpath`. Everything else, including all help, goes through typer.
"""

from __future__ import annotations

import os
import sys

from arca.cli import fastpath
from arca.wire.errors import ArcaError, ConfigError, InvalidInput

# No typing or contextlib at run time (~6 ms): `arca run` starts here every time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    import typer

#: Command modules, each owning one group of commands. A module that fails to import is a bug
#: and fails at start-up, never at the moment a user needs the command.
COMMAND_MODULES = (
    "arca.cli.verify_cmd",
    "arca.cli.kbs_cmd",
    "arca.cli.simtee_cmd",
    "arca.cli.image_cmd",
    "arca.cli.container_cmd",
    "arca.cli.pause_cmd",
    "arca.cli.volume_cmd",
    "arca.cli.measure_cmd",
    "arca.cli.policy_cmd",
    "arca.cli.demo_cmd",
    "arca.cli.doctor_cmd",
)


def build_app() -> typer.Typer:
    import typer

    app = typer.Typer(
        name="arca",
        help="Arca: every container in its own trust domain.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    @app.callback()
    def _root() -> None:
        """Arca: every container in its own trust domain."""

    @app.command("version")
    def version() -> None:
        """Print Arca's version."""
        from arca import __version__

        print(__version__)

    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app


#: podman's exit code for an error of the tool itself (not of the workload).
OWN_ERROR = 125
#: What a non-root user is told when the host refuses something Arca needs root for.
NEEDS_ROOT = ("arca needs root for containers and images: it mounts overlay filesystems, "
              "runc creates namespaces and cgroups, and its state is in /var/lib/arca and "
              "/run/arca-host (run it as root, e.g. sudo arca ...; or set ARCA_ROOT and "
              "ARCA_RUN to directories you own for commands that need no mounts)")


def describe_os_error(err: OSError) -> str:
    what = err.strerror or str(err)
    where = f": {err.filename}" if err.filename else ""
    msg = f"{what}{where}"
    if isinstance(err, PermissionError) and os.geteuid() != 0:
        msg += f"; {NEEDS_ROOT}"
    return msg


#: Command groups keeping their own documented exit codes for Arca's errors instead of
#: podman's 125: ``arca verify`` answers 0 valid, 1 invalid (a refused check), 2 usage or
#: unreadable input, as scripts around quote verifiers expect (ADR 0050).
OWN_CODES = frozenset({"verify"})


def exit_code_for(err: ArcaError, command: str | None = None) -> int:
    """podman's codes (ADR 0050): an error that carries its own (a container's command that
    cannot run: 126 not executable, 127 not found) keeps it; any other error of Arca's is
    125, so it cannot be mistaken for a workload's exit code. ``arca verify`` (``command``)
    keeps 1 for a refused check and 2 for bad input or configuration."""
    code = getattr(err, "exit_code", None)
    if isinstance(code, int):
        return code
    if command in OWN_CODES:
        return 2 if isinstance(err, (InvalidInput, ConfigError)) else 1
    return OWN_ERROR


def _run_typer(args: list[str]) -> int:
    """The typer app; its exit code. A usage error (unknown flag, missing argument) is one
    line naming what was wrong, as every other error of Arca's, and exits 125 as podman's
    do, except for the groups in :data:`OWN_CODES` (click's 2). Typer's own rendering of it
    is a box of five lines or more on stderr (rich's), which a log or a script cannot use."""
    import typer

    # click's exceptions, whichever click typer uses (recent typers vendor their own copy):
    # the bases of typer's public BadParameter.
    mro = {c.__name__: c for c in typer.BadParameter.__mro__}
    usage: Any = mro["UsageError"]
    click_error: Any = mro["ClickException"]
    own = bool(args) and args[0] in OWN_CODES
    try:
        code = build_app()(args=args, prog_name="arca", standalone_mode=False)
    except click_error as err:
        msg = " ".join(err.format_message().split())
        ctx = getattr(err, "ctx", None)
        if msg and isinstance(err, usage) and ctx is not None:
            msg += f" (see '{ctx.command_path} --help')"
        if msg:  # (a group called bare has printed its help instead: nothing more to say)
            print(f"arca: error: {msg}", file=sys.stderr)
        return (2 if isinstance(err, usage) else 1) if own else OWN_ERROR
    except typer.Abort:
        print("Aborted!", file=sys.stderr)  # as click says it
        return 1
    return code if isinstance(code, int) else 0


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        code = None
        if os.environ.get(fastpath.DISABLE_ENV) != "0":
            try:
                code = fastpath.dispatch(args)
                if code is None:
                    from arca.cli import leanpath

                    code = leanpath.dispatch(args)
            except KeyboardInterrupt:
                print("\nAborted!", file=sys.stderr)  # as click says it
                sys.exit(1)
            except BrokenPipeError:  # `arca logs c | head`: exit 1 quietly, as click does
                try:
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                except OSError:
                    pass
                sys.exit(1)
        if code is None:
            if args[:2] == ["kbs", "admin"]:
                from arca.cli.kbs_admin_args import hoist_admin

                args = hoist_admin(args)
            sys.exit(_run_typer(args))
    except ArcaError as err:
        print(f"arca: error: {err}", file=sys.stderr)
        sys.exit(exit_code_for(err, args[0] if args else None))
    except OSError as err:
        # Not an ArcaError: something on this host refused (no traceback, one line, podman's
        # code for an error of the tool itself).
        print(f"arca: error: {describe_os_error(err)}", file=sys.stderr)
        sys.exit(OWN_ERROR)
    if argv is None:
        # The process ends here (console script): skip the interpreter's teardown, ~7 ms of
        # finalizing modules. Nothing on this path needs it: no atexit handlers, no open files.
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:
            pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
