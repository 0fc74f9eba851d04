"""The content-addressed image store under ``arca.host.paths.root_dir()/images``.

Layout::

    blobs/<alg>/<hex>       verified blobs (indexes, manifests, configs; a compressed layer
                            is never stored: it is unpacked as it streams in, ADR 0053)
    layers/<chainid-hex>/   each layer unpacked once, in overlayfs layer format, shared by
                            every image and container that has the same layer chain
    images.json             the image records (name -> manifest, config, layers)
    tmp/                    in-progress downloads and unpacks (never read as content)

Consistency: a blob or layer appears under its final name only by ``rename`` after it was
verified (blob digest while streaming; a layer's compressed digest and diff_id while unpacking)
and, for a layer, written back to disk (one ``syncfs`` before the rename), and an image record
is written (durably) only after all its blobs and layers are in place, so an interrupted or
refused pull, or a host crash, leaves at most unreferenced temporary files that ``prune``
removes. What a layer may expand to
is bounded by :class:`~.limits.ImageLimits` (decompression bombs are refused mid-unpack and their
partial directory removed). Concurrency: per-blob and
per-layer locks make concurrent pulls of the same image do each piece once; pulls hold
``gc.lock`` shared and ``prune``/``rm`` take it exclusively; ``images.json`` is updated under
``db.lock``.

Not here: network access (:mod:`.registry`), reading OCI layouts (:mod:`.layout`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arca._internal.fsutil import private_dir
from arca.host import paths
from arca.host.images.digest import Digest, VerifyingWriter
from arca.host.images.errors import (
    BadManifest,
    DigestMismatch,
    ImageError,
    ImageInUse,
    ImageNotFound,
    UnsafeArchive,
)
from arca.host.images.locks import locked, write_atomic
from arca.host.images.manifest import (
    LAYER_TYPES,
    Descriptor,
    ImageConfig,
    Manifest,
    parse_config,
)
from arca.wire.errors import ArcaError

if TYPE_CHECKING:  # imported where used: `arca run` needs the store, not the limits
    from arca.host.images.limits import ImageBudget, ImageLimits

#: Called with the number of bytes just transferred (progress bars).
ProgressFn = Callable[[int], None]
#: ``source(desc)`` -> a function giving the compressed blob of layer ``desc`` as chunks
#: (called again for a retry).
LayerSource = Callable[["Descriptor"], Callable[[], Iterable[bytes]]]
#: A layer whose download broke off is fetched again (from the start) up to this many times
#: in all.
DOWNLOAD_ATTEMPTS = 3


class _LowersWhenReady(list):  # type: ignore[type-arg]
    """The lower layer directories of a layer being unpacked, waiting (``ready()``) for those
    layers to be complete the first time they are read (the unpacker only iterates them)."""

    def __init__(self, dirs: list[Path], ready: Callable[[], None]) -> None:
        super().__init__(dirs)
        self._ready: Callable[[], None] | None = ready

    def __iter__(self):  # type: ignore[no-untyped-def]
        if self._ready is not None:
            self._ready()
            self._ready = None
        return super().__iter__()


def chain_ids(diff_ids: Iterable[Digest]) -> list[Digest]:
    """OCI ChainIDs: ChainID(L0) = DiffID(L0),
    ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    out: list[Digest] = []
    for d in diff_ids:
        if not out:
            out.append(d)
        else:
            out.append(Digest("sha256", hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest()))
    return out


@dataclass(frozen=True)
class LayerRecord:
    digest: str
    diff_id: str
    chain_id: str
    media_type: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "diff_id": self.diff_id, "chain_id": self.chain_id,
                "media_type": self.media_type, "size": self.size}


@dataclass(frozen=True)
class ImageRecord:
    name: str
    digest: str  # manifest digest
    config: str  # config digest = image id
    layers: tuple[LayerRecord, ...]
    created: str
    platform: str

    @property
    def id(self) -> str:
        return self.config

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest, "config": self.config,
                "layers": [layer.to_json() for layer in self.layers], "created": self.created,
                "platform": self.platform}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ImageRecord:
        return cls(obj["name"], obj["digest"], obj["config"],
                   tuple(LayerRecord(**layer) for layer in obj["layers"]), obj["created"],
                   obj["platform"])


class ImageStore:
    def __init__(self, root: Path | None = None, *, limits: ImageLimits | None = None) -> None:
        self.root = root or paths.root_dir() / "images"
        self._limits = limits

    @property
    def limits(self) -> ImageLimits:
        """The expansion limits (read from the environment on first use unless given)."""
        if self._limits is None:
            from arca.host.images.limits import ImageLimits

            self._limits = ImageLimits.from_env()
        return self._limits

    def check_sizes(self, manifest: Manifest) -> None:
        """Refuse, before any download, layers whose *compressed* size already exceeds the
        limits (the uncompressed content can only be larger, short of a lying descriptor, which
        the digest check catches)."""
        from arca.host.images.limits import ImageLimits, human

        lim = self.limits
        for desc in manifest.layers:
            if desc.size > lim.layer_bytes:
                raise UnsafeArchive(
                    f"layer {desc.digest}: {desc.size} bytes compressed, more than the "
                    f"per-layer limit of {human(lim.layer_bytes)} (raise "
                    f"{ImageLimits.env_name('layer_bytes')} if the image is legitimate)",
                    limit=lim.layer_bytes)
        total = sum(d.size for d in manifest.layers)
        if total > lim.image_bytes:
            raise UnsafeArchive(
                f"image layers total {total} bytes compressed, more than the per-image limit "
                f"of {human(lim.image_bytes)} (raise {ImageLimits.env_name('image_bytes')} "
                "if the image is legitimate)", limit=lim.image_bytes)

    # -- locations -----------------------------------------------------------------------------
    def blob_path(self, d: Digest) -> Path:
        return self.root / "blobs" / d.algorithm / d.hex

    def layer_dir(self, chain_id: Digest | str) -> Path:
        d = chain_id if isinstance(chain_id, Digest) else Digest.parse(chain_id)
        return self.root / "layers" / d.hex

    def tmp_dir(self) -> Path:
        """Scratch space on the store's file system; emptied by ``prune``."""
        p = self.root / "tmp"
        if not p.is_dir() or p.stat().st_mode & 0o077:
            self.secure()
        return p

    def secure(self) -> None:
        """The store and its layer directories are root-only (issue 13, item 12): layers keep
        their images' setuid-root files and device nodes. Tightens an older store too."""
        for d in (self.root, self.root / "layers", self.root / "blobs", self.root / "tmp"):
            private_dir(d)

    @contextlib.contextmanager
    def ingesting(self) -> Iterator[None]:
        """Held (shared) by every operation that adds content, so prune cannot race it."""
        self.secure()
        with locked(self.root / "gc.lock", shared=True):
            yield

    # -- blobs ---------------------------------------------------------------------------------
    def has_blob(self, d: Digest) -> bool:
        return self.blob_path(d).is_file()

    def read_blob(self, d: Digest, limit: int) -> bytes:
        p = self.blob_path(d)
        try:
            with open(p, "rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            raise ImageNotFound(f"blob {d} is not in the store") from None
        if len(data) > limit:
            raise BadManifest(f"blob {d} is larger than the limit of {limit} bytes")
        return data

    def put_blob(self, d: Digest, data: bytes, what: str = "blob") -> None:
        self.ingest_blob(d, len(data), lambda: iter((data,)), what)

    def ingest_blob(
        self,
        d: Digest,
        size: int | None,
        chunks: Callable[[], Iterable[bytes]],
        what: str,
        progress: ProgressFn | None = None,
    ) -> bool:
        """Store the blob ``d`` from ``chunks()`` unless present; False if it was present.

        The content is hashed while it streams to a temporary file, which is renamed into place
        only when size and digest match; on any error the temporary file is removed.
        """
        final = self.blob_path(d)
        if final.is_file():
            return False
        with locked(self.root / "locks" / f"blob-{d.hex}"):
            if final.is_file():  # another pull finished it while we waited
                return False
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.tmp_dir(), prefix=f"blob-{d.hex[:16]}-")
            try:
                w = VerifyingWriter(fd, d, size, what)
                for chunk in chunks():
                    w.write(chunk)
                    if progress:
                        progress(len(chunk))
                w.finish()
                os.fsync(fd)
                os.close(fd)
                fd = -1
                os.chmod(tmp, 0o444)
                os.rename(tmp, final)
            except BaseException:
                if fd >= 0:
                    os.close(fd)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        return True

    # -- layers --------------------------------------------------------------------------------
    def unpack(self, manifest: Manifest, config: ImageConfig, source: LayerSource, *,
               workers: int = 1, retry: type[BaseException] | None = None,
               on_retry: Callable[[Descriptor, int], None] | None = None
               ) -> tuple[LayerRecord, ...]:
        """Unpack every layer not yet in the store, streamed from ``source(desc)()`` (the
        compressed blob's chunks, verified while they pass: see :class:`~.unpack.BlobStream`);
        returns the layer records.

        With ``workers`` > 1 the layers are fetched and unpacked in parallel. A layer reads
        the layers below it only for some entries (a directory it names only implicitly,
        whiteouts, hard-link copy-ups), and waits for them to be complete at its first such
        read; layers are started bottom first, so the lowest unfinished one never waits. An
        error of ``retry``'s type (a dropped download) restarts that layer, up to
        ``DOWNLOAD_ATTEMPTS`` times in all."""
        if len(config.diff_ids) != len(manifest.layers):
            raise BadManifest(
                f"image config lists {len(config.diff_ids)} layers (rootfs.diff_ids), the "
                f"manifest {len(manifest.layers)}")
        chains = chain_ids(config.diff_ids)
        # Only layers unpacked now are charged: a layer already in the store passed its own
        # checks when it was unpacked, and costs this image no new disk space.
        from arca.host.images.limits import ImageBudget

        budget = ImageBudget(self.limits.image_bytes)
        n = len(manifest.layers)
        import threading

        done = [threading.Event() for _ in range(n)]
        failed: list[int] = []

        def lowers_ready(i: int) -> None:
            for j in range(i):
                done[j].wait()
            if any(j < i for j in failed):
                raise ImageError(f"layer {i}: a layer below it failed")

        def one(i: int) -> None:
            desc, diff_id, chain = manifest.layers[i], config.diff_ids[i], chains[i]
            try:
                target = self.layer_dir(chain)
                if not target.is_dir():
                    with locked(self.root / "locks" / f"layer-{chain.hex}"):
                        if not target.is_dir():
                            lowers = _LowersWhenReady(
                                [self.layer_dir(c) for c in reversed(chains[:i])],
                                lambda: lowers_ready(i))
                            self._unpack_one(i, desc, source, diff_id, target, lowers,
                                             budget, retry, on_retry)
            except BaseException:
                failed.append(i)
                raise
            finally:
                done[i].set()

        if workers <= 1 or n <= 1:
            for i in range(n):
                one(i)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(workers, n)) as pool:
                futures = [pool.submit(one, i) for i in range(n)]
                try:
                    for f in futures:  # the lowest failed layer's error is the one raised
                        f.result()
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
        return tuple(LayerRecord(str(d.digest), str(diff), str(c), d.media_type, d.size)
                     for d, diff, c in zip(manifest.layers, config.diff_ids, chains,
                                           strict=True))

    def _unpack_one(self, index: int, desc: Descriptor, source: LayerSource, diff_id: Digest,
                    target: Path, lowers: list[Path], budget: ImageBudget,
                    retry: type[BaseException] | None,
                    on_retry: Callable[[Descriptor, int], None] | None) -> None:
        from arca.host.images.limits import LayerMeter
        from arca.host.images.unpack import BlobStream, unpack_layer  # tarfile: not for run

        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            work = Path(tempfile.mkdtemp(dir=self.tmp_dir(),
                                         prefix=f"layer-{target.name[:16]}-"))
            meter = LayerMeter(f"layer {desc.digest}", self.limits.layer_bytes, budget, index)
            stream = BlobStream(source(desc)(),
                                VerifyingWriter(-1, desc.digest, desc.size,
                                                f"layer {desc.digest}"))
            try:
                os.chmod(work, 0o755)  # noqa: S103 - becomes the layer's root directory
                unpack_layer(stream, LAYER_TYPES[desc.media_type], work, lowers, diff_id,
                             limits=self.limits, meter=meter)
                target.parent.mkdir(parents=True, exist_ok=True)
                # Durable before it is named: a crash leaves no torn layer under its final
                # name for a later pull to trust (see _sync_filesystem).
                _sync_filesystem(work)
                os.rename(work, target)
                return
            except BaseException as e:
                shutil.rmtree(work, ignore_errors=True)
                budget.refund(meter.used, index)
                if retry is None or not isinstance(e, retry) or attempt == DOWNLOAD_ATTEMPTS:
                    raise
                if on_retry is not None:
                    on_retry(desc, attempt)
            finally:
                stream.close()

    def lowerdirs(self, record: ImageRecord) -> list[Path]:
        """The layer directories of ``record``, top layer first (overlayfs lowerdir order)."""
        return [self.layer_dir(layer.chain_id) for layer in reversed(record.layers)]

    # -- records -------------------------------------------------------------------------------
    def _load_db(self) -> dict[str, Any]:
        try:
            obj = json.loads((self.root / "images.json").read_bytes())
        except FileNotFoundError:
            return {"images": {}}
        if not isinstance(obj, dict) or not isinstance(obj.get("images"), dict):
            raise BadManifest(f"{self.root / 'images.json'} is corrupted")
        return obj

    def _save_db(self, db: dict[str, Any]) -> None:
        write_atomic(self.root / "images.json", json.dumps(db, indent=1, sort_keys=True).encode())

    def record(self, name: str, manifest_digest: Digest, manifest: Manifest,
               config: ImageConfig, layers: tuple[LayerRecord, ...]) -> ImageRecord:
        rec = ImageRecord(
            name=name, digest=str(manifest_digest), config=str(manifest.config.digest),
            layers=layers,
            created=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            platform=f"{config.os}/{config.architecture}",
        )
        for layer in layers:  # the invariant `ls` relies on: no record without its content
            if not self.layer_dir(layer.chain_id).is_dir():
                raise DigestMismatch(f"layer {layer.digest} is missing after unpack")
        with locked(self.root / "db.lock"):
            db = self._load_db()
            old = db["images"].get(name)
            if old and old["digest"] == rec.digest and old["config"] == rec.config:
                return ImageRecord.from_json(old)  # unchanged: keep it, skip the write
            db["images"][name] = rec.to_json()
            self._save_db(db)
        return rec

    def list(self) -> list[ImageRecord]:
        with locked(self.root / "db.lock", shared=True):
            db = self._load_db()
        return sorted((ImageRecord.from_json(v) for v in db["images"].values()),
                      key=lambda r: r.name)

    def get(self, ref: str) -> ImageRecord:
        """By name (as pulled/loaded, or normalized), image id, manifest digest or id prefix."""
        from arca.host.images.reference import normalize_name

        images = self.list()
        names = {ref}
        with contextlib.suppress(Exception):
            names.add(normalize_name(ref))
        for r in images:
            if r.name in names:
                return r
        hit = _short_name_match(ref, images)
        if hit is not None:
            return hit
        short = ref.removeprefix("sha256:")
        if len(short) >= 12:
            hits = {r.config: r for r in images
                    if r.config.removeprefix("sha256:").startswith(short)
                    or r.digest.removeprefix("sha256:").startswith(short)}
            if len(hits) == 1:
                return next(iter(hits.values()))
        raise ImageNotFound(f"image {ref!r} is not in the store (arca image pull/load it first)")

    def config_of(self, record: ImageRecord) -> ImageConfig:
        from arca.host.images.manifest import MAX_CONFIG_BYTES

        return parse_config(self.read_blob(Digest.parse(record.config), MAX_CONFIG_BYTES))

    def remove(self, ref: str, *, force: bool = False,
               in_use: Callable[[ImageRecord], Sequence[str]] | None = None) -> ImageRecord:
        rec = self.get(ref)
        users = in_use(rec) if in_use else []
        if users and not force:
            raise ImageInUse(f"image {rec.name} is used by container(s) {', '.join(users)} "
                             "(remove them first, or use --force)")
        with locked(self.root / "db.lock"):
            db = self._load_db()
            db["images"].pop(rec.name, None)
            self._save_db(db)
        return rec

    def prune(self) -> tuple[int, int]:
        """Remove blobs and layers no image refers to, and stale temporaries.

        Layers still mounted (containers of a force-removed image) are kept. Returns
        (files removed, bytes freed).
        """
        removed, freed = 0, 0
        with locked(self.root / "gc.lock"):
            keep_blobs: set[str] = set()
            keep_layers: set[str] = set()
            for rec in self.list():
                keep_blobs |= {rec.digest, rec.config, *(la.digest for la in rec.layers)}
                keep_layers |= {Digest.parse(la.chain_id).hex for la in rec.layers}
            try:
                mountinfo = Path("/proc/self/mountinfo").read_text(errors="replace")
            except OSError:
                mountinfo = ""
            # Index blobs of kept images are not recorded; keep what manifests reference.
            for algo_dir in (self.root / "blobs").glob("*"):
                for blob in algo_dir.iterdir():
                    if f"{algo_dir.name}:{blob.name}" in keep_blobs:
                        continue
                    freed += blob.stat().st_size
                    blob.unlink()
                    removed += 1
            for layer in (self.root / "layers").glob("*"):
                if layer.name in keep_layers or str(layer) in mountinfo:
                    continue
                shutil.rmtree(layer)
                removed += 1
            shutil.rmtree(self.root / "tmp", ignore_errors=True)
            shutil.rmtree(self.root / "locks", ignore_errors=True)
        return removed, freed


def _sync_filesystem(path: Path) -> None:
    """Flush the file system holding ``path`` (``syncfs(2)``): one call writes back a whole
    unpacked layer, where an fsync per file would cost one round trip each (thousands in an
    OS layer). Falls back to ``sync()`` where libc has no syncfs."""
    import ctypes  # pulls only

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _short_name_match(ref: str, images: Sequence[ImageRecord]) -> ImageRecord | None:
    """The stored image a short name (no registry: ``app:v1``, ``team/app``) means, as podman
    finds local images: the one whose repository path is the short name or ends with
    ``/`` + it, with the same tag (or digest). ``app:v1`` then finds
    ``127.0.0.1:5000/app:v1`` and ``localhost/app:v1``. Several matches are refused (the
    caller must name the registry), none is None."""
    from arca.host.images.reference import DOCKER_HUB, Reference

    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return None  # names a registry: only an exact match counts
    try:
        want = Reference.parse(ref)
    except ArcaError:
        return None
    if want.scheme is not None or want.registry != DOCKER_HUB:
        return None
    # the repository path as written ("app", "team/app"), without Docker Hub's library/
    path = ref.partition("@")[0]
    if path.rfind(":") > path.rfind("/"):
        path = path[:path.rfind(":")]
    hits = []
    for r in images:
        try:
            have = Reference.parse(r.name)
        except ArcaError:
            continue  # oci:/path:TAG and other unparseable legacy names
        if (have.tag, have.digest) != (want.tag, want.digest):
            continue
        if have.repository == path or have.repository.endswith("/" + path):
            hits.append(r)
    if len(hits) > 1:
        raise ImageNotFound(f"image {ref!r} is ambiguous: "
                            f"{', '.join(sorted(h.name for h in hits))} (name one in full)")
    return hits[0] if hits else None
