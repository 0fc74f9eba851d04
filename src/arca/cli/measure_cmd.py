"""``arca measure IMAGE --tee sim [--init-data FILE | --kbs URL] [--json]``: reference values.

The measurement a correct TD of this image reports, computed from the image alone (see
:mod:`arca.host.measure`), so a tenant can write policy before anything runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from arca.host.backends import DEFAULT as DEFAULT_TEE
from arca.host.backends import names


def register(app: typer.Typer) -> None:
    @app.command("measure")
    def measure(
        image: str = typer.Argument(..., help="Image in the store, or oci:PATH[:TAG]."),
        tee: str = typer.Option(DEFAULT_TEE, "--tee", help=f"TEE backend ({', '.join(names())})."),
        init_data: Path = typer.Option(None, "--init-data", help="Init-data TOML the "
                                       "container will be started with."),
        kbs: str = typer.Option(None, "--kbs", help="KBS URL: the init-data `arca run --kbs` "
                                "generates."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Compute the launch measurement and its inputs for IMAGE."""
        from arca.cli._common import read_init_data
        from arca.host.measure import measure as do_measure
        from arca.wire.errors import ConfigError

        raw = read_init_data(init_data)
        if kbs is not None:
            from arca.host.containers.spec import generated_init_data

            if raw is not None:
                raise ConfigError("--kbs and --init-data exclude each other")
            raw = generated_init_data(kbs)
        res = do_measure(image, tee, raw)
        if as_json:
            typer.echo(json.dumps(res.to_json(), indent=2))
            return
        p = res.descriptor.process
        typer.echo(f"image:                {res.image} ({res.image_digest})")
        typer.echo(f"tee:                  {res.descriptor.tee}")
        typer.echo(f"measurement:          {res.measurement}")
        typer.echo(f"init-data hash:       {res.init_data_hash}")
        typer.echo(f"guest runtime digest: {res.descriptor.guest_runtime_digest}")
        typer.echo(f"rootfs digest:        {res.descriptor.rootfs_digest}")
        typer.echo(f"process:              {json.dumps(list(p.args))} cwd={p.cwd} "
                   f"uid={p.uid} gid={p.gid}")
        for e in p.env:
            typer.echo(f"  env {e}")
