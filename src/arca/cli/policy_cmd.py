"""``arca policy generate IMAGE [--tee T] [--init-data FILE] [--resource PATH ...]
[--out-dir DIR] [--merge FILE] [--min-tcb C=N ...] [launch options] [--json]``: a KBS resource
policy and reference values for IMAGE (launch options: see ``arca measure``).

Writes ``resource-policy.rego`` and ``reference-values.json`` into DIR and prints the
``arca kbs admin`` commands that install them (see :mod:`arca.host.policygen`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from arca.cli import launch_opts as lo
from arca.cli import params


def register(app: typer.Typer) -> None:
    policy_app = typer.Typer(help="Generate KBS policies for images.", no_args_is_help=True)
    app.add_typer(policy_app, name="policy")

    @policy_app.command("generate")
    @lo.with_launch_options
    def generate(
        image: str = params.IMAGE,
        tee: str = lo.TEE,
        init_data: Path = typer.Option(None, "--init-data", help="Init-data TOML the "
                                       "containers will be started with (pinned by hash)."),
        resource: list[str] = typer.Option([], "--resource", help="Resource repo/type/tag to "
                                           "release (repeatable; default: those the "
                                           "init-data lists)."),
        out_dir: Path = typer.Option(Path("."), "--out-dir", help="Where to write "
                                     "resource-policy.rego and reference-values.json."),
        merge: Path = typer.Option(None, "--merge", help="Reference values JSON in force "
                                   "(`arca kbs admin get-reference-values`): keep their "
                                   "grants for the listed resources."),
        kbs: str = typer.Option(None, "--kbs", help="KBS URL: the init-data `arca run --kbs` "
                                "generates (with --volume)."),
        volume: list[str] = lo.VOLUME,
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
        min_tcb: list[str] = typer.Option([], "--min-tcb", help="snp: lowest acceptable "
                                          "REPORTED_TCB component, COMPONENT=N (repeatable: "
                                          "bootloader, tee, snp, microcode, fmc)."),
        *, launch: dict[str, Any],
    ) -> None:
        """Release exactly the listed resources exactly to IMAGE's measurement."""
        from arca.cli._common import launch_options, measured_init_data
        from arca.host.policygen import generate as do_generate
        from arca.wire.errors import ConfigError

        raw = measured_init_data(init_data, kbs, volume)
        current = None
        if merge is not None:
            try:
                current = json.loads(merge.read_text())
            except (OSError, ValueError) as e:
                raise ConfigError(f"cannot read reference values {merge}: {e}") from None
        options = launch_options(**launch)
        res = do_generate(image, tee=tee, init_data=raw, resources=resource, options=options,
                          min_tcb=min_tcb)
        from arca.host.policylint import init_data_warnings

        for w in init_data_warnings(raw):  # issue 13 item 7: patterns that admit host code
            typer.echo(f"warning: {w}", err=True)
        if current is not None:
            res = res.merge(current)
        try:
            policy, values = res.write(out_dir)
        except OSError as e:
            raise ConfigError(f"cannot write to {out_dir}: {e.strerror}") from None
        for warning in res.warnings():
            typer.echo(f"arca: warning: {warning}", err=True)
        if as_json:
            typer.echo(json.dumps({**res.to_json(), "policy_file": str(policy),
                                   "reference_values_file": str(values)}, indent=2))
            return
        typer.echo(f"image:          {res.image} ({res.image_digest})")
        typer.echo(f"measurements:   {', '.join(res.measurements)}")
        typer.echo(f"init-data hash: {res.init_data_hash}")
        typer.echo(f"resources:      {', '.join(res.resources)}")
        typer.echo(f"wrote {policy} and {values}; install with:")
        for line in res.admin_commands(out_dir):
            typer.echo(f"  {line}")
        typer.echo("or, for the reference values in one call:\n  arca kbs admin --url $KBS_URL "
                   f"--admin-key $ADMIN_KEY set-reference-values --file {values}")
