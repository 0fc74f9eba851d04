"""``arca measure IMAGE [--tee T] [--init-data FILE | --kbs URL] [launch options] [--json]``:
reference values.

The measurement a correct TD of this image reports, computed from the image alone (see
:mod:`arca.host.measure`), so a tenant can write policy before anything runs. For ``tdx`` and
``snp`` the launch options (firmware, kernel, initramfs, VM shape) override the runtime
configuration, so the values match the launcher's exact inputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from arca.cli import launch_opts as lo
from arca.cli import params


def register(app: typer.Typer) -> None:
    @app.command("measure")
    @lo.with_launch_options
    def measure(
        image: str = params.IMAGE,
        tee: str = lo.TEE,
        init_data: Path = typer.Option(None, "--init-data", help="Init-data TOML the "
                                       "container will be started with."),
        kbs: str = typer.Option(None, "--kbs", help="KBS URL: the init-data `arca run --kbs` "
                                "generates."),
        volume: list[str] = lo.VOLUME,
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
        *, launch: dict[str, Any],
    ) -> None:
        """Compute the launch measurement and its inputs for IMAGE."""
        from arca.cli._common import launch_options, measured_init_data
        from arca.host.measure import measure as do_measure

        raw = measured_init_data(init_data, kbs, volume)
        options = launch_options(**launch)
        res = do_measure(image, tee, raw, options=options)
        from arca.host.runtime.execpolicy import policy_of
        from arca.host.runtime.tdchecks import allowed_mounts

        mounts = allowed_mounts(policy_of(raw))  # measured: the default set + allow_mounts
        if as_json:
            typer.echo(json.dumps({**res.to_json(), "allowed_mounts": mounts}, indent=2))
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
        for key, value in res.reference.extra.items():
            typer.echo(f"{key + ':':22}{value}")
        typer.echo(f"allowed mounts:       {' '.join(mounts)}")
