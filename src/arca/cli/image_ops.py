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
