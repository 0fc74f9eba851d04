"""``arca doctor [--tee T] [--json]``: which TEE backends this host can run, and why not
(see :mod:`arca.host.doctor`). Exit status: 0, or 1 when ``--tee`` names a backend this host
cannot run."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor(
        tee: list[str] = typer.Option([], "--tee", help="Only these backends (repeatable)."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Check which backends this host can run, and for each it cannot, exactly why."""
        from arca.host.doctor import examine, to_json

        reports = examine(tuple(tee) or None)
        if as_json:
            typer.echo(json.dumps(to_json(reports), indent=2))
        else:
            width = max(len(r.name) for r in reports)
            for r in reports:
                if r.available:
                    typer.echo(f"{r.name:{width}}  ok")
                    continue
                typer.echo(f"{r.name:{width}}  no: {r.problems[0]}")
                for more in r.problems[1:]:
                    typer.echo(f"{'':{width}}      {more}")
        if tee and not all(r.available for r in reports):
            raise typer.Exit(1)
