"""Command group placeholder: its owner replaces this with the real commands."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    del app
