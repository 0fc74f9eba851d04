"""``arca demo``: the end-to-end demonstration (see :mod:`arca.demo`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        keep: bool = typer.Option(False, "--keep", help="Keep the demo's work directory."),
        tee: list[str] = typer.Option(  # noqa: B008 - typer's idiom
            ["sim", "vm"], "--tee",
            help="Backends to run the story on, in order (vm is skipped, saying why, where "
                 "this machine cannot run it)."),
    ) -> None:
        """Build an image, attest it to an embedded KBS, deliver a secret, refuse a tamper."""
        from arca.demo import run_demo

        run_demo(keep=keep, tees=tuple(tee))
