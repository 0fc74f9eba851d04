"""``arca run|ps|logs|stop|rm|exec|inspect``: containers without a daemon.

Each container runs in its own trust domain (``--tee sim`` by default; ``sim`` protects against
other containers, not against this host). Detached containers (``-d``) keep running after the
CLI exits, watched by a per-container monitor. Containers use the host network. ``--kbs URL``
starts the container with generated init-data holding only ``kbs_url = URL``; use
``--init-data FILE`` for anything more (resources, execution policy), never both.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer


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
        from arca.cli._common import read_init_data
        from arca.host.containers.engine import Engine, RunOptions
        from arca.wire.errors import ConfigError

        raw = read_init_data(init_data)
        if tee not in ("sim", "none"):
            raise ConfigError(f"--tee {tee!r}: arca run supports sim and none")
        opts = RunOptions(image=image, command=list(command or []), name=name, detach=detach,
                          auto_remove=rm, env=list(env or []), volumes=list(volume or []),
                          tee=tee, kbs_url=kbs, init_data=raw)
        rec, code = Engine().run(opts)
        if detach:
            typer.echo(rec.id)
            return
        raise typer.Exit(code or 0)

    @app.command("ps")
    def ps(
        all_: bool = typer.Option(False, "--all", "-a", help="Also exited containers."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """List containers."""
        from arca.host.containers.engine import Engine

        recs = [r for r in Engine().store.list() if all_ or r.is_alive()]
        if as_json:
            typer.echo(json.dumps([{**r.to_json(), "state": r.display_status} for r in recs],
                                  indent=2))
            return
        typer.echo(f"{'CONTAINER ID':<14} {'NAME':<20} {'TEE':<5} {'STATUS':<14} "
                   f"{'IMAGE':<40} COMMAND")
        for r in recs:
            typer.echo(f"{r.id[:12]:<14} {r.name:<20} {r.tee:<5} {r.display_status:<14} "
                       f"{r.image[:40]:<40} {' '.join(r.args)[:40]}")

    @app.command("logs")
    def logs(
        container: str = typer.Argument(..., help="Container name or id."),
        follow: bool = typer.Option(False, "--follow", "-f", help="Follow until it exits."),
    ) -> None:
        """Print a detached container's output (stdout and stderr, interleaved); a foreground
        container's output went to the terminal and is not kept."""
        from arca.host.containers.engine import Engine

        out = sys.stdout.buffer
        for chunk in Engine().logs(container, follow=follow):
            out.write(chunk)
            out.flush()

    @app.command("stop")
    def stop(
        containers: list[str] = typer.Argument(..., help="Container names or ids."),
        time_: float = typer.Option(10.0, "--time", "-t", help="Seconds before SIGKILL."),
    ) -> None:
        """Stop running containers (SIGTERM, then SIGKILL after --time)."""
        from arca.host.containers.engine import Engine

        eng = Engine()
        for c in containers:
            eng.stop(c, time_)
            typer.echo(c)

    @app.command("rm")
    def rm(
        containers: list[str] = typer.Argument(..., help="Container names or ids."),
        force: bool = typer.Option(False, "--force", "-f", help="Kill it first if running."),
    ) -> None:
        """Remove containers (their TD state, rootfs changes and logs)."""
        from arca.host.containers.engine import Engine

        eng = Engine()
        for c in containers:
            eng.remove(c, force=force)
            typer.echo(c)

    @app.command("exec", context_settings={"allow_interspersed_args": False})
    def exec_(
        container: str = typer.Argument(..., help="Container name or id."),
        command: list[str] = typer.Argument(..., help="Command and arguments."),
        env: list[str] = typer.Option(None, "--env", "-e", help="K=V environment variable."),
    ) -> None:
        """Run a command in a running container (subject to the TD's execution policy)."""
        from arca.host.containers.engine import Engine

        raise typer.Exit(Engine().exec(container, list(command), list(env or [])))

    @app.command("inspect")
    def inspect(container: str = typer.Argument(..., help="Container name or id.")) -> None:
        """Show a container's record as JSON."""
        from arca.host.containers.engine import Engine

        typer.echo(json.dumps(Engine().inspect(container), indent=2))
