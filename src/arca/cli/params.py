"""Typer parameters that several commands take, defined once so that each is spelled and
described the same everywhere (typer reads parameters off each command's signature: these are
their defaults there)."""

from __future__ import annotations

import typer

IMAGE = typer.Argument(..., help="Image in the store, or oci:PATH[:TAG].")
CONTAINER = typer.Argument(..., help="Container name or id.")
CONTAINERS = typer.Argument(..., help="Container names or ids.")
STOP_TIME = typer.Option(10.0, "--time", "-t", help="Seconds before SIGKILL.")
