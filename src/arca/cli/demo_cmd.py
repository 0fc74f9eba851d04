"""``arca demo``: the end-to-end demonstration (see :mod:`arca.demo`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        keep: bool = typer.Option(False, "--keep", help="Keep the demo's work directory."),
    ) -> None:
        """Build an image, attest it to an embedded KBS, deliver a secret, refuse a tamper."""
        from arca.demo import run_demo

        run_demo(keep=keep)
