"""``arca simtee``: run and inspect the simulated TEE platform daemon.

``sim`` evidence protects containers from each other, never from this host: whoever runs the
daemon holds the platform key. ``arca-runtime`` starts the daemon by itself when a ``sim``
container is created; these commands are for operators and for configuring a relying party
(``root-cert``).
"""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    sim = typer.Typer(help="The simulated TEE platform (development and CI only: it does not "
                           "protect against this host).", no_args_is_help=True)
    app.add_typer(sim, name="simtee")

    @sim.command("serve")
    def serve() -> None:
        """Run the sim platform daemon in the foreground (exits at once if one already runs)."""
        from arca.host.simtee.daemon import serve as run

        raise typer.Exit(run())

    @sim.command("start")
    def start() -> None:
        """Start the daemon in the background if it is not running."""
        from arca.host.simtee import client

        client.ensure_running()
        typer.echo(f"sim platform running (pid {client.read_pid()})")

    @sim.command("status")
    def status(
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Whether the daemon runs, and the TDs registered with it."""
        from arca.host.simtee import client, locations

        running = client.is_running()
        tds = client.list_tds() if running else []
        out = {"running": running, "pid": client.read_pid() if running else None,
               "root_cert": str(locations.root_cert_path()), "tds": tds}
        if as_json:
            typer.echo(json.dumps(out, indent=2))
            return
        if not running:
            typer.echo("sim platform: not running")
            raise typer.Exit(3)
        typer.echo(f"sim platform: running (pid {out['pid']}), {len(tds)} TD(s)")
        if not tds:
            return
        from arca.cli.table import columns
        from arca.host.containers.state import ContainerStore

        # a TD's id is its container's id: name the arca containers (others, e.g.
        # containerd's, have no record here)
        recs = {r.id: r for r in ContainerStore().list()}
        rows = [("CONTAINER", "TD ID", "IMAGE", "MEASUREMENT")]
        for td in tds:
            rec = recs.get(td["td_id"])
            rows.append((rec.name if rec else "-", td["td_id"][:12],
                         rec.image if rec else "-", td["measurement"]))
        typer.echo(columns(rows))

    @sim.command("stop")
    def stop() -> None:
        """Stop the daemon. Registered TDs stay registered and are served again on restart."""
        from arca.host.simtee import client

        typer.echo("sim platform stopped" if client.stop() else "sim platform was not running")

    @sim.command("root-cert")
    def root_cert(
        path_only: bool = typer.Option(False, "--path", help="Print only the file path."),
    ) -> None:
        """Print the sim root certificate (PEM), to configure as trusted in a KBS/verifier.

        Creates the sim root and platform key on first use."""
        from arca.host.simtee.platform import ensure_keys

        ensure_keys()
        from arca.host.simtee import locations

        path = locations.root_cert_path()
        typer.echo(str(path) if path_only else path.read_text().rstrip("\n"))
