"""``arca pause|unpause CONTAINER...``: freeze a running container's processes and thaw them,
as ``podman pause``/``unpause`` (``runc pause``/``resume``: the container's cgroup freezer).
For every backend: a ``sim`` TD's agent and workload, or a ``vm`` container's VMM and QEMU
(the whole VM stops and goes on where it stopped)."""

from __future__ import annotations

import typer

from arca.cli import params


def register(app: typer.Typer) -> None:
    @app.command("pause")
    def pause(containers: list[str] = params.CONTAINERS) -> None:
        """Pause running containers: their processes stop until arca unpause."""
        _each(containers, resume=False)

    @app.command("unpause")
    def unpause(containers: list[str] = params.CONTAINERS) -> None:
        """Unpause paused containers: their processes go on where they stopped."""
        _each(containers, resume=True)


def _each(containers: list[str], *, resume: bool) -> None:
    from arca.host.containers.engine import Engine

    eng = Engine()
    for c in containers:
        eng.pause(c, resume=resume)
        print(c, flush=True)
