"""Entry point of ``arca``. Each command group lives in its own module with ``register(app)``."""

from __future__ import annotations

import importlib
import sys

import typer

from arca.wire.errors import ArcaError, ConfigError, InvalidInput

#: Command modules, each owning one group of commands. A module that fails to import is a bug
#: and fails at start-up, never at the moment a user needs the command.
COMMAND_MODULES = (
    "arca.cli.verify_cmd",
    "arca.cli.kbs_cmd",
    "arca.cli.simtee_cmd",
    "arca.cli.image_cmd",
    "arca.cli.container_cmd",
    "arca.cli.measure_cmd",
    "arca.cli.policy_cmd",
    "arca.cli.demo_cmd",
)


def build_app() -> typer.Typer:
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

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app


def exit_code_for(err: ArcaError) -> int:
    """Usage/input/config problems exit 2; refusals and failed checks exit 1."""
    return 2 if isinstance(err, (InvalidInput, ConfigError)) else 1


def main(argv: list[str] | None = None) -> None:
    app = build_app()
    try:
        # Standalone mode: click prints usage errors itself and exits 2.
        app(args=argv, prog_name="arca")
    except ArcaError as err:
        print(f"arca: error: {err}", file=sys.stderr)
        sys.exit(exit_code_for(err))


if __name__ == "__main__":
    main()
