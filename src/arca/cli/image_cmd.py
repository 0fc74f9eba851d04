"""``arca image pull|load|ls|inspect|rm|prune``: the local image store.

Thin: argument definitions and one library call each (:mod:`arca.host.images`). Imports are
inside the commands so ``arca`` starts fast for every other command.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def register(app: typer.Typer) -> None:
    image = typer.Typer(help="Manage the local image store.", no_args_is_help=True)
    app.add_typer(image, name="image")

    @image.command("pull")
    def pull(
        reference: str = typer.Argument(..., help="[REGISTRY/]REPOSITORY[:TAG][@DIGEST]"),
        creds: str = typer.Option(None, "--creds", help="USER:PASSWORD for the registry "
                                  "(else $ARCA_REGISTRY_CREDS, else ~/.docker/config.json)."),
        insecure: bool = typer.Option(False, "--insecure", help="Allow plain HTTP if the "
                                      "registry has no TLS (content is still verified by "
                                      "digest; credentials are never sent after such a "
                                      "fallback: name the registry http://HOST/... to allow "
                                      "them)."),
        ca_cert: Path = typer.Option(None, "--ca-cert", help="PEM CA bundle to verify the "
                                     "registry's TLS certificate."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress (bars on a "
                                  "terminal, plain lines in a log)."),
    ) -> None:
        """Pull an image from an OCI distribution registry (linux/amd64 of an index)."""
        from arca.cli.image_ops import pull as do_pull

        raise typer.Exit(do_pull(reference, creds, insecure, str(ca_cert) if ca_cert else None,
                                 quiet))

    @image.command("load")
    def load(
        source: Path = typer.Argument(..., help="OCI layout directory or OCI archive (tar)."),
        tag: str = typer.Option(None, "--tag", help="Which image of the layout (its ref name)."),
        name: str = typer.Option(None, "--name", help="Name to store it under."),
    ) -> None:
        """Load an image from an OCI layout directory or an OCI archive. Without --name it is
        named after the layout's ref name if that is a full reference, else
        localhost/SOURCE-NAME:TAG (./app --tag v1 -> localhost/app:v1, run as app:v1)."""
        from arca.host.images import ImageStore
        from arca.host.images import load as do_load

        rec = do_load(ImageStore(), source, tag=tag, name=name)
        typer.echo(f"{rec.name} {rec.digest}")

    @image.command("ls")
    def ls(
        as_json: bool = typer.Option(False, "--json", help="Arca's image records as JSON."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the image ids."),
        format_: str = typer.Option(None, "--format", help="Go template, as podman's: "
                                    "'{{.Repository}}:{{.Tag}} {{.ID}}', 'table ...', "
                                    "'json' (podman's keys)."),
        noheading: bool = typer.Option(False, "--noheading", "-n", help="No header row."),
        no_trunc: bool = typer.Option(False, "--no-trunc", help="Full image ids."),
        all_: bool = typer.Option(False, "--all", "-a", help="Accepted as podman's (a store "
                                  "of pulled images has no intermediate images)."),
    ) -> None:
        """List the images in the store."""
        from arca.cli.image_ops import images

        raise typer.Exit(images(as_json, quiet, format_, noheading, no_trunc, all_))

    @image.command("inspect")
    def inspect(ref: str = typer.Argument(..., help="Image name, id or digest.")) -> None:
        """Show an image's record and config as JSON."""
        from arca.host.images import ImageStore

        store = ImageStore()
        rec = store.get(ref)
        out = rec.to_json()
        out["image_config"] = store.config_of(rec).raw
        typer.echo(json.dumps(out, indent=2))

    @image.command("rm")
    def rm(
        refs: list[str] = typer.Argument(..., help="Image names, ids or digests."),
        force: bool = typer.Option(False, "--force", "-f", help="Remove even if containers "
                                   "use it (their mounted layers stay until they are removed)."),
    ) -> None:
        """Remove images from the store (their content goes at the next prune). Exit codes
        as podman's rmi: 1 if an image was not there, 2 if one is in use (without -f)."""
        from arca.host.containers.engine import Engine
        from arca.host.images import ImageStore
        from arca.host.images.errors import ImageInUse, ImageNotFound

        store = ImageStore()
        eng = Engine(images=store)
        code = 0
        for ref in refs:
            try:
                rec = store.remove(ref, force=force,
                                   in_use=lambda r: eng.images_in_use(r.digest))
            except (ImageNotFound, ImageInUse) as e:
                typer.echo(f"arca: error: {e}", err=True)
                code = 2 if isinstance(e, ImageInUse) else max(code, 1)
                continue
            typer.echo(f"removed {rec.name}")
        raise typer.Exit(code)

    # podman's top-level spellings of the same commands
    app.command("pull", help="Pull an image (as arca image pull).")(pull)
    app.command("images", help="List the images in the store (as arca image ls).")(ls)
    app.command("rmi", help="Remove images (as arca image rm).")(rm)

    @image.command("prune")
    def prune() -> None:
        """Delete blobs and unpacked layers that no image refers to."""
        from arca.host.images import ImageStore

        n, freed = ImageStore().prune()
        typer.echo(f"removed {n} item(s), freed {_size(freed)}")


