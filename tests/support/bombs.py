"""Decompression bombs for the image-store tests: tars that are small compressed and huge
uncompressed, built by streaming (never holding the expanded bytes in memory)."""

from __future__ import annotations

import gzip
import hashlib
import io
import pathlib
import tarfile
from collections.abc import Iterator

import zstandard

CHUNK = 1 << 20
ZEROS = bytes(CHUNK)


def _zeros(n: int) -> Iterator[bytes]:
    while n > 0:
        k = min(n, CHUNK)
        yield ZEROS[:k]
        n -= k


def bomb_tar_chunks(size: int, *, name: str = "zeros", files: int = 1,
                    tail: int = 0) -> Iterator[bytes]:
    """An uncompressed tar of ``files`` files of ``size`` zero bytes each, then ``tail`` zero
    bytes after the end-of-archive marker (still part of the layer's diff_id)."""
    for i in range(files):
        ti = tarfile.TarInfo(f"{name}{i}" if files > 1 else name)
        ti.size, ti.mode, ti.mtime = size, 0o644, 1_700_000_000
        yield ti.tobuf(format=tarfile.PAX_FORMAT)
        yield from _zeros(size)
        yield bytes(-size % tarfile.BLOCKSIZE)
    yield bytes(2 * tarfile.BLOCKSIZE)
    yield from _zeros(tail)


def compress_stream(chunks: Iterator[bytes], compression: str) -> tuple[bytes, str, int]:
    """(compressed blob, diff_id of the uncompressed stream, uncompressed length)."""
    h = hashlib.sha256()
    n = 0
    out = io.BytesIO()
    if compression == "gzip":
        with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0) as gz:
            for c in chunks:
                h.update(c)
                n += len(c)
                gz.write(c)
    elif compression == "zstd":
        cobj = zstandard.ZstdCompressor(level=19).compressobj()
        for c in chunks:
            h.update(c)
            n += len(c)
            out.write(cobj.compress(c))
        out.write(cobj.flush())
    else:
        raise ValueError(compression)
    return out.getvalue(), f"sha256:{h.hexdigest()}", n


MEDIA = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
         "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}


def write_bomb_layout(layout: pathlib.Path, layers: list[tuple[bytes, str, str]], *,
                      tag: str = "latest") -> dict[str, object]:
    """An OCI layout of one image from already compressed layers ``(blob, diff_id,
    compression)``. Returns {"manifest": bytes, "config": bytes, "layers": [blob bytes]}."""
    import json

    def put(data: bytes) -> dict[str, object]:
        d = hashlib.sha256(data).hexdigest()
        (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (layout / "blobs" / "sha256" / d).write_bytes(data)
        return {"digest": f"sha256:{d}", "size": len(data)}

    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [d for _, d, _ in layers]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put(config)},
        "layers": [{"mediaType": MEDIA[c], **put(b)} for b, _, c in layers],
    }).encode()
    mdesc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **put(manifest),
             "annotations": {"org.opencontainers.image.ref.name": tag}}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [mdesc]}))
    return {"manifest": manifest, "config": config, "layers": [b for b, _, _ in layers]}
