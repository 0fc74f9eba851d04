"""``arca volume create|ls|inspect|rm|prune``: named volumes, as podman's (``local`` driver).

Thin: argument definitions and one call each into :mod:`arca.host.containers.volumes`.
"""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    vol = typer.Typer(help="Manage named volumes (arca run -v NAME:/path).",
                      no_args_is_help=True)
    app.add_typer(vol, name="volume")

    @vol.command("create")
    def create(
        name: str = typer.Argument(None, help="Volume name (default: a random one)."),
        label: list[str] = typer.Option(None, "--label", "-l", help="KEY=VALUE metadata."),
        ignore: bool = typer.Option(False, "--ignore", help="No error if it exists."),
    ) -> None:
        """Create a volume (arca run -v NAME:/path creates a missing one too)."""
        from arca.host.containers.runflags import parse_labels
        from arca.host.containers.volumes import VolumeStore

        info = VolumeStore().create(name, parse_labels(list(label or [])), exist_ok=ignore)
        typer.echo(info["Name"])

    @vol.command("ls")
    def ls(
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the names."),
        format_: str = typer.Option(None, "--format", help="json, or a Go template as "
                                    "podman's: '{{.Name}} {{.Mountpoint}}'."),
    ) -> None:
        """List volumes."""
        from arca.cli import table
        from arca.host.containers.volumes import VolumeStore

        vols = VolumeStore().ls()
        if quiet:
            for v in vols:
                typer.echo(v["Name"])
        elif format_ == "json":
            typer.echo(json.dumps(vols, indent=2))
        elif format_:
            out = table.render_each(format_, vols)
            if out:
                typer.echo(out)
        else:
            typer.echo(table.columns([("DRIVER", "VOLUME NAME")]
                                     + [(v["Driver"], v["Name"]) for v in vols]))

    @vol.command("inspect")
    def inspect(
        names: list[str] = typer.Argument(..., help="Volume names."),
        format_: str = typer.Option(None, "--format", "-f", help="Go template, as podman's: "
                                    "'{{.Mountpoint}}'."),
    ) -> None:
        """Show volumes as JSON (podman's fields: Name, Driver, Mountpoint, CreatedAt...)."""
        from arca.cli import table
        from arca.host.containers.volumes import VolumeStore

        store = VolumeStore()
        vols = [store.get(n) for n in names]
        typer.echo(table.render_each(format_, vols) if format_ else json.dumps(vols, indent=2))

    @vol.command("rm")
    def rm(
        names: list[str] = typer.Argument(..., help="Volume names."),
        force: bool = typer.Option(False, "--force", "-f", help="Remove the containers "
                                   "using it first (running ones are killed)."),
    ) -> None:
        """Remove volumes and their data; refused while a container (even a stopped one)
        uses one, unless --force."""
        from arca.host.containers.volumes import VolumeStore

        store = VolumeStore()
        for n in names:
            if force:
                from arca.host.containers.engine import Engine

                eng = Engine(containers=store.containers)
                with store.lock():
                    users = store.users().get(n, [])
                for c in users:
                    eng.remove(c, force=True)
            store.remove(n)
            typer.echo(n)

    @vol.command("prune")
    def prune(force: bool = typer.Option(False, "--force", "-f", help="Do not ask.")) -> None:
        """Remove every volume no container uses."""
        from arca.host.containers.volumes import VolumeStore

        if not force and not typer.confirm("Remove all volumes not used by a container?"):
            raise typer.Exit(0)
        for n in VolumeStore().prune():
            typer.echo(n)
