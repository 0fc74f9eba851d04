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


def human(n: float) -> str:
    """``2 MB``, ``1.08 MB``, ``844 B``: podman's image sizes (three significant digits,
    units of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
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


def _split(name: str) -> tuple[str, str]:
    """(REPOSITORY, TAG) as podman shows them; a name by digest has no tag: ``<none>``."""
    if "@" in name:
        return name.partition("@")[0], "<none>"
    repo, sep, tag = name.rpartition(":")
    return (repo, tag) if sep and "/" not in tag else (name, "<none>")


def _image_created(config: str) -> str | None:
    """The image's own creation time (its config's ``created``, what podman's CREATED shows),
    read from the stored config blob; None if it has none."""
    algo, _, hexd = config.partition(":")
    try:
        with open(os.path.join(root_dir(), "images", "blobs", algo, hexd), "rb") as f:
            created = json_loads(f.read()).get("created")
    except (OSError, ValueError, AttributeError):
        return None
    return created if isinstance(created, str) else None


def fields(r: dict[str, Any]) -> dict[str, Any]:
    """An image as ``arca images --format`` sees it: podman's field names."""
    from arca.cli.table import ago, epoch

    repo, tag = _split(r["name"])
    created = _image_created(r["config"]) or r["created"]
    t = epoch(created)
    nbytes = sum(la["size"] for la in r["layers"])
    return {"Repository": repo, "Tag": tag, "ID": r["config"].removeprefix("sha256:")[:12],
            "Id": r["config"].removeprefix("sha256:"), "Digest": r["digest"],
            "Names": [r["name"]], "RepoDigests": [f"{repo}@{r['digest']}"],
            "Created": int(t) if t is not None else 0, "CreatedAt": created,
            "CreatedSince": ago(created) or created, "Size": human(nbytes),
            "SizeBytes": nbytes, "Pulled": r["created"]}


def images(as_json: bool, quiet: bool = False, format_: str | None = None,
           noheading: bool = False, no_trunc: bool = False, all_: bool = False) -> int:
    """``arca images``: podman's columns (REPOSITORY TAG IMAGE ID CREATED SIZE; SIZE is what
    was downloaded, compressed) and flags (``-q``, ``--format``, ``-n``, ``--no-trunc``; ``-a``
    is accepted: a store of pulled images has no intermediate ones to add)."""
    recs = records()
    if as_json:
        import json

        print(json.dumps(recs, indent=2))
        return 0
    objs = [fields(r) for r in recs]
    if no_trunc:
        for o in objs:
            o["ID"] = "sha256:" + o["Id"]
    if quiet:
        ids = list(dict.fromkeys(o["ID"] for o in objs))  # one line per image, as podman
        if ids:
            print("\n".join(ids))
        return 0
    from arca.cli import table

    if format_ == "json":
        import json

        hidden = ("ID", "Pulled", "SizeBytes", "CreatedSince")
        print(json.dumps([{**{k: v for k, v in o.items() if k not in hidden},
                           "Size": o["SizeBytes"]} for o in objs], indent=2))
        return 0
    if format_:
        out = table.render_each(format_, objs)
        if noheading and format_.startswith("table"):
            out = "\n".join(out.splitlines()[1:])
        if out:
            print(out)
        return 0
    rows = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")]
    rows += [(o["Repository"], o["Tag"], o["ID"], o["CreatedSince"], o["Size"])
             for o in objs]
    if noheading:
        rows = rows[1:]
    if rows:
        print(table.columns(rows))
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
