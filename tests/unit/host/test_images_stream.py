"""Layers unpacked as they stream in (ADR 0053): the gzip reader's framing rules, the blob's
digest checked on the stream, and parallel unpacking that waits for the layers below."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import zlib
from pathlib import Path

import pytest

from arca.host.images.digest import Digest, VerifyingWriter
from arca.host.images.errors import DigestMismatch
from arca.host.images.manifest import Descriptor, ImageConfig, Manifest
from arca.host.images.store import ImageStore
from arca.host.images.unpack import BlobStream, Gunzip, unpack_layer

DATA = os.urandom(3 << 20) + b"x" * (2 << 20)


def read_all(r: Gunzip) -> bytes:
    out = b""
    while chunk := r.read(100_000):
        out += chunk
    return out


@pytest.mark.parametrize("blob", [
    gzip.compress(DATA),
    gzip.compress(DATA[:1000]) + gzip.compress(DATA[1000:]),  # two members
    gzip.compress(DATA) + b"\0" * 5000,  # zero padding
])
def test_gunzip_reads_what_gzip_reads(blob: bytes) -> None:
    assert read_all(Gunzip(io.BytesIO(blob))) == DATA
    with gzip.GzipFile(fileobj=io.BytesIO(blob)) as f:  # what gzip.GzipFile reads
        assert f.read() == DATA


@pytest.mark.parametrize("blob, error", [
    (gzip.compress(DATA)[:-100], EOFError),  # ends inside the member
    (gzip.compress(DATA) + b"garbage", gzip.BadGzipFile),
    (gzip.compress(DATA)[:-8] + b"\0\0\0\0" + gzip.compress(DATA)[-4:], zlib.error),  # CRC
])
def test_gunzip_refuses(blob: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        read_all(Gunzip(io.BytesIO(blob)))


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def test_stream_with_wrong_blob_digest_is_a_digest_mismatch(tmp_path: Path) -> None:
    raw = tar_of({"a": b"1"})
    blob = gzip.compress(raw)
    wrong = Digest.of(b"another blob")
    stream = BlobStream(iter([blob[:10], blob[10:]]), VerifyingWriter(-1, wrong, len(blob), "L"))
    (tmp_path / "d").mkdir()
    with pytest.raises(DigestMismatch, match="L: digest mismatch"):
        unpack_layer(stream, "gzip", tmp_path / "d", [], Digest.of(raw))
    # corrupt content: refused as the blob's mismatch, not as what the corruption made gzip say
    bad = blob[:-6] + bytes([blob[-6] ^ 1]) + blob[-5:]
    stream = BlobStream(iter([bad]), VerifyingWriter(-1, Digest.of(blob), len(blob), "L"))
    (tmp_path / "e").mkdir()
    with pytest.raises(DigestMismatch, match="L: digest mismatch"):
        unpack_layer(stream, "gzip", tmp_path / "e", [], Digest.of(raw))


def test_parallel_layers_wait_for_the_layers_below(tmp_path: Path) -> None:
    """Layer 1 names etc/ only implicitly (it takes etc/'s mode from layer 0) and removes
    layer 0's file by a whiteout: both need layer 0 complete; layer 0's blob arrives slowly."""
    import time

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        d = tarfile.TarInfo("etc")
        d.type, d.mode = tarfile.DIRTYPE, 0o750
        tf.addfile(d)
        for name in ("etc/gone", "etc/kept"):
            ti = tarfile.TarInfo(name)
            ti.size = 1
            tf.addfile(ti, io.BytesIO(b"0"))
    tars = [buf.getvalue(), tar_of({"etc/new": b"1", "etc/.wh.gone": b""})]
    blobs = [gzip.compress(t) for t in tars]
    descs = tuple(Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", Digest.of(b),
                             len(b)) for b in blobs)
    manifest = Manifest("application/vnd.oci.image.manifest.v1+json",
                        Descriptor("application/vnd.oci.image.config.v1+json",
                                   Digest.of(b"{}"), 2), descs)
    config = ImageConfig("linux", "amd64", tuple(Digest.of(t) for t in tars))

    def source(desc: Descriptor):  # type: ignore[no-untyped-def]
        i = descs.index(desc)

        def chunks():  # type: ignore[no-untyped-def]
            for k in range(0, len(blobs[i]), 64):
                if i == 0:
                    time.sleep(0.005)
                yield blobs[i][k:k + 64]
        return chunks

    store = ImageStore(tmp_path / "store")
    store.secure()
    records = store.unpack(manifest, config, source, workers=2)
    top = store.layer_dir(records[1].chain_id)
    assert (top / "etc").stat().st_mode & 0o777 == 0o750
    assert sorted(os.listdir(top / "etc")) == ["gone", "new"]  # gone: the whiteout (0/0 char)
    assert os.listdir(store.root / "blobs") == []  # no compressed copy of a layer
