"""The body of ``arca images`` / ``arca image ls``, free of typer and of the image store's
parsers (dataclasses, hashlib, pathlib: ~20 ms): it reads ``images.json`` under the store's
``db.lock`` (shared), as :meth:`arca.host.images.store.ImageStore.list` does, and prints the
same records. Both the typer command and :mod:`arca.cli.leanpath` call it."""

from __future__ import annotations

import os

from arca._internal.fastjson import json_loads
from arca.host.containers.state import FileLock, root_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return str(n)


def records() -> list[dict[str, Any]]:
    """The image records, sorted by name (``ImageRecord.to_json`` form)."""
    from arca.wire.errors import ConfigError

    images = os.path.join(root_dir(), "images")
    with FileLock(os.path.join(images, "db.lock"), shared=True):
        try:
            with open(os.path.join(images, "images.json"), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
    try:
        db = json_loads(data)
    except ValueError:
        db = None
    if not isinstance(db, dict) or not isinstance(db.get("images"), dict):
        raise ConfigError(f"{os.path.join(images, 'images.json')} is corrupted")
    return [{"name": r["name"], "digest": r["digest"], "config": r["config"],
             "layers": r["layers"], "created": r["created"], "platform": r["platform"]}
            for _, r in sorted(db["images"].items())]


def images(as_json: bool) -> int:
    recs = records()
    if as_json:
        import json

        print(json.dumps(recs, indent=2))
        return 0
    from arca.cli.table import ago, columns

    rows = [("NAME", "IMAGE ID", "SIZE", "CREATED")]
    rows += [(r["name"], r["config"].removeprefix("sha256:")[:12],
              size(sum(la["size"] for la in r["layers"])), ago(r["created"]) or r["created"])
             for r in recs]
    print(columns(rows))
    return 0


def pull(reference: str, creds: str | None = None, insecure: bool = False,
         ca_cert: str | None = None, quiet: bool = False) -> int:
    """``arca pull`` / ``arca image pull``: the body of both the typer command and the lean
    path (:mod:`arca.cli.leanpath`), which skips typer's ~0.3 s of start-up."""
    from arca.cli._common import registry_credentials
    from arca.host.images import ImageStore
    from arca.host.images import pull as do_pull
    from arca.host.images.progress import for_stderr

    bars = None if quiet else for_stderr()
    kwargs = dict(credentials=registry_credentials(creds, reference), insecure=insecure,
                  ca_file=ca_cert)
    if bars:
        with bars:
            bars.message(f"pulling {reference}")
            rec = do_pull(ImageStore(), reference, progress=bars, **kwargs)  # type: ignore[arg-type]
    else:
        rec = do_pull(ImageStore(), reference, **kwargs)  # type: ignore[arg-type]
    print(f"{rec.name} {rec.digest}")
    return 0
