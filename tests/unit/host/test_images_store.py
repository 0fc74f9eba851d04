"""Blob ingestion: verified while streaming, nothing half-written, concurrency-safe."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from arca.host.images.digest import Digest
from arca.host.images.errors import DigestMismatch, ImageNotFound
from arca.host.images.store import ImageStore, chain_ids

DATA = os.urandom(3 << 20)
DIGEST = Digest.of(DATA)


def chunks(data: bytes, size: int = 65536) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def leftovers(store: ImageStore) -> list[str]:
    tmp = store.root / "tmp"
    return sorted(os.listdir(tmp)) if tmp.exists() else []


def test_blob_is_stored_under_its_digest(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    assert store.ingest_blob(DIGEST, len(DATA), lambda: chunks(DATA), "layer")
    assert store.blob_path(DIGEST).read_bytes() == DATA
    assert not store.ingest_blob(DIGEST, len(DATA), lambda: chunks(b"ignored"), "layer")
    assert leftovers(store) == []


@pytest.mark.parametrize("case", ["corrupted", "truncated", "too long", "wrong size"])
def test_bad_content_leaves_nothing_behind(tmp_path: Path, case: str) -> None:
    store = ImageStore(tmp_path)
    data, size = {
        "corrupted": (DATA[:100] + b"X" + DATA[101:], len(DATA)),
        "truncated": (DATA[: len(DATA) // 2], len(DATA)),
        "too long": (DATA + b"extra", len(DATA)),
        "wrong size": (DATA, len(DATA) - 1),
    }[case]
    with pytest.raises(DigestMismatch) as info:
        store.ingest_blob(DIGEST, size, lambda: chunks(data), "layer x")
    assert "layer x" in str(info.value)
    assert not store.blob_path(DIGEST).exists()
    assert leftovers(store) == []


def test_interrupted_stream_leaves_nothing_behind(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)

    def broken() -> Iterator[bytes]:
        yield DATA[:1000]
        raise ConnectionError("peer went away")

    with pytest.raises(ConnectionError):
        store.ingest_blob(DIGEST, len(DATA), broken, "layer")
    assert not store.blob_path(DIGEST).exists() and leftovers(store) == []


def test_concurrent_ingest_of_one_blob_downloads_once(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    calls: list[int] = []
    results: list[bool] = []

    def slow() -> Iterator[bytes]:
        calls.append(1)
        yield from chunks(DATA, 1 << 18)

    def worker() -> None:
        results.append(store.ingest_blob(DIGEST, len(DATA), slow, "layer"))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert len(calls) == 1
    assert store.blob_path(DIGEST).read_bytes() == DATA


def test_chain_ids_follow_the_image_spec() -> None:
    a, b = Digest.of(b"a"), Digest.of(b"b")
    import hashlib

    assert chain_ids([a, b]) == [a, Digest("sha256", hashlib.sha256(
        f"{a} {b}".encode()).hexdigest())]


def test_unknown_image_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ImageNotFound, match="not in the store"):
        ImageStore(tmp_path).get("docker.io/library/nothing:latest")
