"""Bringing images into the store: ``pull`` from a registry, ``load`` from an OCI layout
directory or archive, and ``resolve`` of the IMAGE argument of ``arca run``/``arca measure``.

Each path follows the same steps: pick the manifest (an index chooses linux/amd64), verify and
store manifest and config, stream every layer blob into the store verified by digest, unpack
each layer once (verifying its diff_id), and only then record the image under its name.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from arca.host.images.digest import Digest
from arca.host.images.errors import (
    BadManifest,
    BadReference,
    ImageNotFound,
    RegistryUnavailable,
    UnsafeArchive,
)
from arca.host.images.manifest import (
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    Descriptor,
    Index,
    Manifest,
    Platform,
    parse_config,
    parse_descriptor,
    parse_manifest,
)
from arca.host.images.reference import Reference
from arca.host.images.store import ImageRecord, ImageStore

if TYPE_CHECKING:  # httpx and rich cost ~60 ms to import: only pulls need them
    from arca.host.images.progress import PullProgress
    from arca.host.images.registry import Credentials

DEFAULT_PLATFORM = Platform("linux", "amd64")
RETRY_DELAY_S = 0.2
#: Concurrent layer downloads of one pull (registries commonly allow a handful per client).
PARALLEL_DOWNLOADS = 3
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
#: The index.json of an OCI layout is small; bound it like a manifest.
MAX_INDEX_BYTES = MAX_MANIFEST_BYTES


def pull(
    store: ImageStore,
    reference: str,
    *,
    credentials: Credentials | None = None,
    insecure: bool = False,
    ca_file: str | None = None,
    platform: Platform = DEFAULT_PLATFORM,
    progress: PullProgress | None = None,
) -> ImageRecord:
    from arca.host.images.progress import QuietProgress
    from arca.host.images.registry import RegistryClient

    ref = Reference.parse(reference)
    prog = progress or QuietProgress()
    # http://HOST/... asks for plain HTTP (credentials included; needs insecure=True too);
    # https://HOST/... forbids the plain-HTTP fallback even with insecure=True
    with store.ingesting(), RegistryClient(
            ref.api_host, credentials=credentials, insecure=insecure and ref.scheme != "https",
            ca_file=ca_file, plain_http=ref.scheme == "http") as client:
        data, ctype = client.get_manifest(ref.repository, ref.ref)
        mdigest = Digest.of(data)
        if ref.digest:
            ref.digest.verify(data, f"manifest of {ref}")
            mdigest = ref.digest
        doc = parse_manifest(data, ctype)
        if isinstance(doc, Index):
            store.put_blob(mdigest, data, "image index")
            desc = doc.select(platform)
            data, ctype = client.get_manifest(ref.repository, str(desc.digest))
            _check_desc(desc, data, "manifest")
            mdigest = desc.digest
            doc = parse_manifest(data, ctype or desc.media_type)
            if not isinstance(doc, Manifest):
                raise BadManifest("image index points to another index (nesting refused)")
        store.put_blob(mdigest, data, "manifest")
        manifest = doc
        store.check_sizes(manifest)
        cfg_data = client.get_blob(ref.repository, manifest.config.digest, MAX_CONFIG_BYTES)
        _check_desc(manifest.config, cfg_data, "image config")
        store.put_blob(manifest.config.digest, cfg_data, "image config")
        config = parse_config(cfg_data)

        def source(desc: Descriptor) -> Callable[[], Iterator[bytes]]:
            task = prog.add(f"layer {desc.digest.hex[:12]}", desc.size)

            def chunks() -> Iterator[bytes]:
                for chunk in client.blob_chunks(ref.repository, desc.digest):
                    prog.advance(task, len(chunk))
                    yield chunk
            return chunks

        def retrying(desc: Descriptor, attempt: int) -> None:
            prog.message(f"layer {desc.digest.hex[:12]}: transfer broke off, retrying")
            time.sleep(RETRY_DELAY_S * attempt)

        # Layers download in parallel, each unpacked while it downloads (no compressed copy
        # is written: see ImageStore.unpack); a dropped connection is worth another try, a
        # digest mismatch is not.
        layers = store.unpack(manifest, config, source, workers=PARALLEL_DOWNLOADS,
                              retry=RegistryUnavailable, on_retry=retrying)
        return store.record(str(ref), mdigest, manifest, config, layers)


def _check_desc(desc: Descriptor, data: bytes, what: str) -> None:
    if len(data) != desc.size:
        raise BadManifest(f"{what} {desc.digest}: {len(data)} bytes, its descriptor says "
                          f"{desc.size}")
    desc.digest.verify(data, what)


# -- OCI layout ---------------------------------------------------------------------------------
def _layout_blob(layout: Path, d: Digest) -> Path:
    return layout / "blobs" / d.algorithm / d.hex


def _read_layout_blob(layout: Path, desc: Descriptor, limit: int, what: str) -> bytes:
    try:
        with open(_layout_blob(layout, desc.digest), "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise BadManifest(f"OCI layout {layout}: {what} blob {desc.digest} is missing") from None
    if len(data) > limit:
        raise BadManifest(f"{what} {desc.digest} is larger than the limit of {limit} bytes")
    _check_desc(desc, data, what)
    return data


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk


def load_layout(
    store: ImageStore,
    layout: Path,
    *,
    tag: str | None = None,
    name: str | None = None,
    platform: Platform = DEFAULT_PLATFORM,
    repository: str | None = None,
) -> ImageRecord:
    """Load the image ``tag`` (or the only image) of the OCI layout directory ``layout``.
    Stored under ``name``; else, with ``repository``, under a registry-style name
    (:func:`local_name`); else under ``oci:LAYOUT:TAG``."""
    layout = layout.resolve()
    try:
        with open(layout / "index.json", "rb") as f:
            index_data = f.read(MAX_INDEX_BYTES + 1)
        oci_layout = json.loads((layout / "oci-layout").read_bytes())
    except FileNotFoundError as e:
        raise BadManifest(f"{layout} is not an OCI layout: {e.filename} is missing") from None
    except (ValueError, RecursionError):
        raise BadManifest(f"{layout}/oci-layout is not JSON") from None
    if not isinstance(oci_layout, dict) or oci_layout.get("imageLayoutVersion") != "1.0.0":
        raise BadManifest(f"{layout}: unsupported imageLayoutVersion")
    try:
        obj = json.loads(index_data) if len(index_data) <= MAX_INDEX_BYTES else None
    except (ValueError, RecursionError):  # the layout may come from an untrusted archive
        obj = None
    if not isinstance(obj, dict) or not isinstance(obj.get("manifests"), list):
        raise BadManifest(f"{layout}/index.json is not an image index")
    entries = [parse_descriptor(d, f"index.json manifests[{i}]")
               for i, d in enumerate(obj["manifests"])]
    if tag is not None:
        chosen = [d for d in entries if d.annotations.get(REF_NAME_ANNOTATION) == tag]
    else:
        chosen = entries
    if len(chosen) != 1:
        tags = sorted({d.annotations.get(REF_NAME_ANNOTATION, "?") for d in entries})
        if not chosen:
            raise ImageNotFound(f"OCI layout {layout} has no image tagged {tag!r} "
                                f"(tags: {', '.join(tags) or 'none'})")
        raise BadManifest(f"OCI layout {layout} holds {len(chosen)} images: name one with "
                          f":TAG (tags: {', '.join(tags)})")
    desc = chosen[0]
    tag = tag or desc.annotations.get(REF_NAME_ANNOTATION)
    with store.ingesting():
        data = _read_layout_blob(layout, desc, MAX_MANIFEST_BYTES, "manifest")
        doc = parse_manifest(data, desc.media_type)
        if isinstance(doc, Index):
            store.put_blob(desc.digest, data, "image index")
            desc = doc.select(platform)
            data = _read_layout_blob(layout, desc, MAX_MANIFEST_BYTES, "manifest")
            doc = parse_manifest(data, desc.media_type)
            if not isinstance(doc, Manifest):
                raise BadManifest("image index points to another index (nesting refused)")
        store.put_blob(desc.digest, data, "manifest")
        store.check_sizes(doc)
        cfg = _read_layout_blob(layout, doc.config, MAX_CONFIG_BYTES, "image config")
        store.put_blob(doc.config.digest, cfg, "image config")
        config = parse_config(cfg)
        for layer in doc.layers:
            if not _layout_blob(layout, layer.digest).is_file():
                raise BadManifest(f"OCI layout {layout}: layer blob {layer.digest} is missing")
        # each layer unpacked straight from the layout's blob, verified as it is read
        layers = store.unpack(doc, config, lambda d: lambda: _file_chunks(
            _layout_blob(layout, d.digest)), workers=PARALLEL_DOWNLOADS)
        if name is None and repository is not None:
            name = local_name(repository, tag)
        return store.record(name or f"oci:{layout}:{tag or 'latest'}", desc.digest, doc,
                            config, layers)


def local_name(repository: str, tag: str | None) -> str:
    """The name ``arca image load`` gives an image, as podman names what it loads: the
    layout's ref name when that is a full reference (``registry/repo:tag``), else
    ``localhost/REPOSITORY:TAG`` (so ``arca run REPOSITORY:TAG`` finds it, see
    :meth:`ImageStore.get`)."""
    if tag and "/" in tag:
        try:
            first = tag.split("/", 1)[0]
            if "." in first or ":" in first or first == "localhost":
                return str(Reference.parse(tag))
            return str(Reference.parse(f"localhost/{tag}"))
        except BadReference:
            pass
    if tag and ":" in tag:
        try:
            return str(Reference.parse(f"localhost/{tag}"))
        except BadReference:
            pass
    repo = "".join(c if c.isalnum() or c in "._-" else "-" for c in repository.lower())
    repo = repo.strip("._-") or "image"
    try:
        return str(Reference.parse(f"localhost/{repo}:{tag or 'latest'}"))
    except BadReference:
        return f"localhost/{repo}:latest"


def load(store: ImageStore, source: Path, *, tag: str | None = None,
         name: str | None = None) -> ImageRecord:
    """``arca image load``: an OCI layout directory or an OCI archive, stored under ``name``
    or else :func:`local_name` of the source's file name (``./app`` -> ``localhost/app:TAG``)."""
    stem = source.resolve().name
    for ext in (".tar.gz", ".tgz", ".tar", ".oci"):
        if stem.endswith(ext) and len(stem) > len(ext):
            stem = stem[:-len(ext)]
            break
    if source.is_file():
        with store.ingesting():
            return _load_archive(store, source, tag, name, repository=stem)
    return load_layout(store, source, tag=tag, name=name, repository=stem)


def load_archive(store: ImageStore, archive: Path, *, tag: str | None = None,
                 name: str | None = None) -> ImageRecord:
    """Load from an OCI archive (a tar of an OCI layout, possibly compressed), extracted safely
    to a temp dir in the store (on disk, not a tmpfs; prune waits for it). The extraction is
    bounded by ``store.limits`` (bytes and entries); then the layers go through the same
    checks and limits as for a layout directory."""
    with store.ingesting():
        return _load_archive(store, archive, tag, name)


def _load_archive(store: ImageStore, archive: Path, tag: str | None,
                  name: str | None, repository: str | None = None) -> ImageRecord:
    import tarfile  # archives only, not layout directories

    from arca.host.images.limits import ImageLimits, human

    lim = store.limits
    tmp = Path(tempfile.mkdtemp(dir=store.tmp_dir(), prefix="oci-archive-"))
    try:
        try:
            from arca.host.images.unpack import BoundedTarInfo

            with tarfile.open(archive, tarinfo=BoundedTarInfo) as tf:
                entries = total = 0
                for m in tf:
                    entries += 1
                    if entries > lim.archive_entries:
                        raise UnsafeArchive(
                            f"OCI archive {archive}: more than {lim.archive_entries} entries "
                            f"(limit; raise {ImageLimits.env_name('archive_entries')} if the "
                            "archive is legitimate)", limit=lim.archive_entries)
                    if not (m.isfile() or m.isdir()):
                        raise UnsafeArchive(f"OCI archive {archive}: entry {m.name!r} is not a "
                                            "file or directory")
                    # checked at the header, before a byte of the entry is written (m.size is
                    # the expanded size, sparse holes included)
                    total += m.size
                    if total > lim.archive_bytes:
                        raise UnsafeArchive(
                            f"OCI archive {archive}: entry {m.name!r} takes the extracted size "
                            f"past the limit of {human(lim.archive_bytes)} (raise "
                            f"{ImageLimits.env_name('archive_bytes')} if the archive is "
                            "legitimate)", limit=lim.archive_bytes)
                    tf.extract(m, tmp, filter="data")
        except tarfile.FilterError as e:
            raise UnsafeArchive(f"OCI archive {archive}: {e}") from None
        except tarfile.TarError as e:
            raise BadManifest(f"{archive} is not a tar archive: {e}") from None
        if repository is not None:
            return load_layout(store, tmp, tag=tag, name=name, repository=repository)
        return load_layout(store, tmp, tag=tag, name=name or f"oci-archive:{archive.resolve()}"
                           f":{tag or 'latest'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def split_oci_ref(spec: str) -> tuple[Path, str | None]:
    """``PATH[:TAG]`` (after the ``oci:`` prefix) -> (path, tag)."""
    head, sep, tail = spec.rpartition(":")
    if sep and "/" not in tail and tail and not Path(spec).exists():
        return Path(head), tail
    return Path(spec), None


def resolve(store: ImageStore, image: str) -> ImageRecord:
    """The store record for IMAGE: ``oci:PATH[:TAG]`` is loaded (once per content), anything
    else must already be in the store."""
    if image.startswith("oci:"):
        path, tag = split_oci_ref(image[4:])
        if path.is_file():
            return load_archive(store, path, tag=tag)
        return load_layout(store, path, tag=tag)
    return store.get(image)
