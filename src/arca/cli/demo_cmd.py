"""``arca demo``: the end-to-end demonstration (see :mod:`arca.demo`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        keep: bool = typer.Option(False, "--keep", help="Keep the demo's work directory."),
        tee: list[str] = typer.Option(  # noqa: B008 - typer's idiom
            [], "--tee",
            help="Backends to run the story on, in order (default: sim, then vm, which is "
                 "skipped, saying why, where this machine cannot run it)."),
    ) -> None:
        """Build an image, attest it to an embedded KBS, deliver a secret, refuse a tamper."""
        from arca.demo import run_demo

        if tee:
            run_demo(keep=keep, tees=tuple(tee))
        else:
            run_demo(keep=keep)
