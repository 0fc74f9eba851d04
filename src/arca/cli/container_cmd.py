"""``arca run|ps|logs|stop|rm|exec|inspect``: containers without a daemon.

Each container runs in its own trust domain (``--tee sim`` by default; ``sim`` protects against
other containers, not against this host). Detached containers (``-d``) keep running after the
CLI exits, watched by a per-container monitor. Containers use the host network. ``--kbs URL``
starts the container with generated init-data holding only ``kbs_url = URL``; use
``--init-data FILE`` for anything more (resources, execution policy), never both.

The command bodies are in :mod:`arca.cli.container_ops`; :mod:`arca.cli.fastpath` parses the
common forms of these commands without typer and must accept exactly these options (a test
compares them).
"""

from __future__ import annotations

from pathlib import Path

import typer

from arca.cli import container_ops as ops


def register(app: typer.Typer) -> None:
    @app.command("run", context_settings={"allow_interspersed_args": False})
    def run(
        image: str = typer.Argument(..., help="Image in the store, or oci:PATH[:TAG]."),
        command: list[str] = typer.Argument(None, help="Command replacing the image's Cmd."),
        detach: bool = typer.Option(False, "--detach", "-d", help="Run in the background."),
        name: str = typer.Option(None, "--name", help="Container name."),
        rm: bool = typer.Option(False, "--rm", help="Remove the container when it exits."),
        env: list[str] = typer.Option(None, "--env", "-e", help="K=V environment variable."),
        volume: list[str] = typer.Option(None, "--volume", "-v", help="SRC:DST[:ro] bind."),
        tee: str = typer.Option("sim", "--tee", help="sim (a software TD: isolates the "
                                "container from other containers, never from this host) | "
                                "none (plain runc)."),
        kbs: str = typer.Option(None, "--kbs", help="KBS URL (generates init-data)."),
        init_data: Path = typer.Option(None, "--init-data", help="Init-data TOML file."),
    ) -> None:
        """Run a container from an image, each in its own trust domain."""
        raise typer.Exit(ops.run(image, command, detach, name, rm, env, volume, tee, kbs,
                                 init_data))

    @app.command("ps")
    def ps(
        all_: bool = typer.Option(False, "--all", "-a", help="Also exited containers."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """List containers."""
        raise typer.Exit(ops.ps(all_, as_json))

    @app.command("logs")
    def logs(
        container: str = typer.Argument(..., help="Container name or id."),
        follow: bool = typer.Option(False, "--follow", "-f", help="Follow until it exits."),
    ) -> None:
        """Print a detached container's output (stdout and stderr, interleaved); a foreground
        container's output went to the terminal and is not kept."""
        raise typer.Exit(ops.logs(container, follow))

    @app.command("stop")
    def stop(
        containers: list[str] = typer.Argument(..., help="Container names or ids."),
        time_: float = typer.Option(10.0, "--time", "-t", help="Seconds before SIGKILL."),
    ) -> None:
        """Stop running containers (SIGTERM, then SIGKILL after --time)."""
        raise typer.Exit(ops.stop(containers, time_))

    @app.command("rm")
    def rm(
        containers: list[str] = typer.Argument(..., help="Container names or ids."),
        force: bool = typer.Option(False, "--force", "-f", help="Kill it first if running."),
    ) -> None:
        """Remove containers (their TD state, rootfs changes and logs)."""
        raise typer.Exit(ops.rm(containers, force))

    @app.command("exec", context_settings={"allow_interspersed_args": False})
    def exec_(
        container: str = typer.Argument(..., help="Container name or id."),
        command: list[str] = typer.Argument(..., help="Command and arguments."),
        env: list[str] = typer.Option(None, "--env", "-e", help="K=V environment variable."),
    ) -> None:
        """Run a command in a running container (subject to the TD's execution policy)."""
        raise typer.Exit(ops.exec_(container, command, env))

    @app.command("inspect")
    def inspect(container: str = typer.Argument(..., help="Container name or id.")) -> None:
        """Show a container's record as JSON."""
        raise typer.Exit(ops.inspect(container))
