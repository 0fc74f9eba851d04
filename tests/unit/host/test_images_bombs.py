"""Decompression bombs against the layer unpacker, the store and OCI archive extraction: each
is refused with a message naming the layer and the limit, before the disk fills, and leaves the
store consistent (a later good load succeeds)."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.host.images import ImageStore, load_archive, load_layout
from arca.host.images.digest import Digest
from arca.host.images.errors import UnsafeArchive
from arca.host.images.limits import ImageLimits, parse_size
from arca.host.images.unpack import unpack_layer
from arca.wire.errors import ConfigError
from tests.support.bombs import bomb_tar_chunks, compress_stream, write_bomb_layout
from tests.support.imagetrees import tar_bytes, write_layout

MiB = 1 << 20
LOW = ImageLimits(layer_bytes=4 * MiB, image_bytes=6 * MiB, layer_entries=50,
                  archive_bytes=8 * MiB, archive_entries=50)


def disk_usage(path: Path) -> int:
    """Bytes actually allocated below ``path`` (sparse-aware)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total


def run_unpack(tmp: Path, blob: bytes, compression: str, diff_id: str,
               limits: ImageLimits = LOW, lowers: list[Path] | None = None) -> Path:
    (tmp / "blob").write_bytes(blob)
    dest = tmp / "dest"
    dest.mkdir()
    unpack_layer(tmp / "blob", compression, dest, lowers or [], Digest.parse(diff_id),
                 limits=limits)
    return dest


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_one_huge_file_is_refused_before_a_byte_is_written(tmp_path: Path,
                                                            compression: str) -> None:
    blob, diff_id, size = compress_stream(bomb_tar_chunks(256 * MiB), compression)
    assert len(blob) * 500 < size, "the bomb should be small on the wire"
    with pytest.raises(UnsafeArchive, match=r"layer blob: decompresses to more than 4 MiB "
                                            r"\(per-layer limit; raise "
                                            r"ARCA_IMAGE_MAX_LAYER_BYTES"):
        run_unpack(tmp_path, blob, compression, diff_id)
    assert disk_usage(tmp_path / "dest") == 0


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_many_small_files_are_stopped_by_the_stream_meter(tmp_path: Path,
                                                          compression: str) -> None:
    blob, diff_id, _ = compress_stream(bomb_tar_chunks(MiB // 2, files=64), compression)
    with pytest.raises(UnsafeArchive, match="decompresses to more than 4 MiB"):
        run_unpack(tmp_path, blob, compression, diff_id)
    assert disk_usage(tmp_path / "dest") <= 5 * MiB


def test_zeros_after_the_end_of_archive_are_metered_too(tmp_path: Path) -> None:
    # Only the diff_id check reads past the end marker; that must not be an unbounded loop.
    blob, diff_id, _ = compress_stream(bomb_tar_chunks(10, tail=512 * MiB), "zstd")
    with pytest.raises(UnsafeArchive, match="decompresses to more than 4 MiB"):
        run_unpack(tmp_path, blob, "zstd", diff_id)


def sparse_tar(tmp: Path, *args: str) -> bytes:
    if not shutil.which("tar"):
        pytest.skip("needs GNU tar")
    src = tmp / "src"
    src.mkdir(exist_ok=True)
    with open(src / "sparse", "wb") as f:
        f.truncate(1 << 34)  # 16 GiB of holes, nothing on disk
        f.write(b"x")
    raw = subprocess.run(["tar", "-S", *args, "-C", str(src), "-cf", "-", "sparse"],
                         check=True, capture_output=True).stdout
    assert len(raw) < MiB
    return raw


def test_sparse_file_holes_count(tmp_path: Path) -> None:
    # PAX 0.1 sparse: the map sits in the (bounded) PAX header, the holes are metered
    raw = sparse_tar(tmp_path, "--format=pax", "--sparse-version=0.1")
    with pytest.raises(UnsafeArchive, match="decompresses to more than 4 MiB"):
        run_unpack(tmp_path, gzip.compress(raw), "gzip", str(Digest.of(raw)))
    assert disk_usage(tmp_path / "dest") == 0


@pytest.mark.parametrize("args", [("--format=gnu",), ("--format=pax", "--sparse-version=1.0")])
def test_sparse_formats_with_unbounded_maps_are_refused(tmp_path: Path,
                                                        args: tuple[str, ...]) -> None:
    raw = sparse_tar(tmp_path, *args)
    with pytest.raises(UnsafeArchive, match="sparse file refused"):
        run_unpack(tmp_path, gzip.compress(raw), "gzip", str(Digest.of(raw)))


def test_oversized_pax_header_is_refused_before_it_is_read(tmp_path: Path) -> None:
    ti = tarfile.TarInfo("f")
    ti.pax_headers = {"comment": "x" * (2 * MiB)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(ti, io.BytesIO(b""))
    raw = buf.getvalue()
    big = ImageLimits(layer_bytes=64 * MiB)
    with pytest.raises(UnsafeArchive, match="tar extended header of 2097[0-9]+ bytes refused"):
        run_unpack(tmp_path, gzip.compress(raw), "gzip", str(Digest.of(raw)), limits=big)


def test_hard_links_copied_up_from_a_lower_layer_count(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    lower.mkdir()
    (lower / "big").write_bytes(b"\1" * MiB)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(20):  # 20 MiB of copy-ups from a few kilobytes of tar
            ti = tarfile.TarInfo(f"link{i}")
            ti.type, ti.linkname = tarfile.LNKTYPE, "big"
            tf.addfile(ti)
    raw = buf.getvalue()
    with pytest.raises(UnsafeArchive, match="decompresses to more than 4 MiB"):
        run_unpack(tmp_path, gzip.compress(raw), "gzip", str(Digest.of(raw)), lowers=[lower])
    assert disk_usage(tmp_path / "dest") <= 5 * MiB


def test_entry_count_limit(tmp_path: Path) -> None:
    raw = tar_bytes([(f"d{i}/", "dir", b"") for i in range(51)])
    with pytest.raises(UnsafeArchive, match="more than 50 entries.*ARCA_IMAGE_MAX_LAYER_ENTRIES"):
        run_unpack(tmp_path, gzip.compress(raw), "gzip", str(Digest.of(raw)))


def test_within_limits_unpacks(tmp_path: Path) -> None:
    blob, diff_id, _ = compress_stream(bomb_tar_chunks(3 * MiB), "zstd")
    dest = run_unpack(tmp_path, blob, "zstd", diff_id)
    assert (dest / "zeros").stat().st_size == 3 * MiB


# -- through the store: per-image total, consistency, then a good load ----------------------------
@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ARCA_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("ARCA_RUN", str(tmp_path / "run"))
    return tmp_path / "root" / "images"


def assert_nothing_half_written(store: ImageStore) -> None:
    assert store.list() == []
    tmp = store.root / "tmp"
    assert not tmp.exists() or os.listdir(tmp) == []
    layers = store.root / "layers"
    assert not layers.exists() or os.listdir(layers) == []


def test_image_total_is_refused_naming_the_layer(tmp_path: Path, root: Path) -> None:
    layers = [compress_stream(bomb_tar_chunks(5 * MiB // 2, name=f"f{i}"), "gzip")
              for i in range(3)]
    write_bomb_layout(tmp_path / "lay", [(b, d, "gzip") for b, d, _ in layers])
    store = ImageStore(root, limits=LOW)
    third = Digest.of(layers[2][0])
    with pytest.raises(UnsafeArchive, match=f"layer {third}: the image expands to more than "
                                            "6 MiB .*ARCA_IMAGE_MAX_IMAGE_BYTES"):
        load_layout(store, tmp_path / "lay")
    assert store.list() == []
    assert not os.listdir(store.root / "tmp")
    # the same image with the default limits loads, reusing what was verified
    rec = load_layout(ImageStore(root), tmp_path / "lay")
    assert len(rec.layers) == 3


def test_limits_come_from_the_environment(tmp_path: Path, root: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    blob, diff_id, _ = compress_stream(bomb_tar_chunks(3 * MiB), "gzip")
    write_bomb_layout(tmp_path / "lay", [(blob, diff_id, "gzip")])
    monkeypatch.setenv("ARCA_IMAGE_MAX_LAYER_BYTES", "2M")
    with pytest.raises(UnsafeArchive, match=f"layer {Digest.of(blob)}: decompresses to more "
                                            "than 2 MiB"):
        load_layout(ImageStore(root), tmp_path / "lay")
    assert_nothing_half_written(ImageStore(root))
    monkeypatch.setenv("ARCA_IMAGE_MAX_LAYER_BYTES", "1K")  # compressed size alone exceeds it
    with pytest.raises(UnsafeArchive, match="compressed, more than the per-layer limit of 1 KiB"):
        load_layout(ImageStore(root), tmp_path / "lay")
    monkeypatch.delenv("ARCA_IMAGE_MAX_LAYER_BYTES")
    assert load_layout(ImageStore(root), tmp_path / "lay").layers


# -- OCI archives -------------------------------------------------------------------------------
def tar_dir(src: Path, out: Path, mode: str = "w") -> Path:
    with tarfile.open(out, mode) as tf:
        for p in sorted(src.rglob("*")):
            tf.add(p, p.relative_to(src).as_posix(), recursive=False)
    return out


def test_archive_extraction_total_is_bounded(tmp_path: Path, root: Path) -> None:
    # a gzip-compressed OCI archive whose one extra entry expands to 64 MiB
    parts = write_layout(tmp_path / "lay", [tar_bytes([("a", "file", "hello")])])
    del parts
    (tmp_path / "lay" / "padding").write_bytes(bytes(64 * MiB))
    archive = tar_dir(tmp_path / "lay", tmp_path / "bomb.tar.gz", "w:gz")
    assert archive.stat().st_size < MiB
    store = ImageStore(root, limits=LOW)
    with pytest.raises(UnsafeArchive, match=r"entry 'padding' takes the extracted size past "
                                            r"the limit of 8 MiB .*ARCA_IMAGE_MAX_ARCHIVE_BYTES"):
        load_archive(store, archive)
    assert_nothing_half_written(store)
    (tmp_path / "lay" / "padding").unlink()
    good = tar_dir(tmp_path / "lay", tmp_path / "good.tar")
    assert load_archive(store, good).layers


def test_archive_entry_count_is_bounded(tmp_path: Path, root: Path) -> None:
    write_layout(tmp_path / "lay", [tar_bytes([("a", "file", "hello")])])
    for i in range(60):
        (tmp_path / "lay" / f"junk{i}").write_bytes(b"")
    archive = tar_dir(tmp_path / "lay", tmp_path / "many.tar")
    store = ImageStore(root, limits=LOW)
    with pytest.raises(UnsafeArchive, match="more than 50 entries"):
        load_archive(store, archive)
    assert_nothing_half_written(store)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_layer_bomb_inside_an_archive(tmp_path: Path, root: Path, compression: str) -> None:
    blob, diff_id, _ = compress_stream(bomb_tar_chunks(128 * MiB), compression)
    write_bomb_layout(tmp_path / "lay", [(blob, diff_id, compression)])
    archive = tar_dir(tmp_path / "lay", tmp_path / "bomb.tar")
    store = ImageStore(root, limits=LOW)
    with pytest.raises(UnsafeArchive, match=f"layer {Digest.of(blob)}: decompresses to more "
                                            "than 4 MiB"):
        load_archive(store, archive)
    assert_nothing_half_written(store)


# -- limit parsing ------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "value"), [("4096", 4096), ("512M", 512 << 20),
                                             ("16G", 16 << 30), ("1 TiB", 1 << 40),
                                             ("2kb", 2048)])
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text, "X") == value


@pytest.mark.parametrize("text", ["", "0", "-1", "1.5G", "12X", "G", "1e9"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="expected a positive size"):
        parse_size(text, "ARCA_IMAGE_MAX_LAYER_BYTES")


def test_from_env_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="ARCA_IMAGE_MAX_IMAGE_BYTES"):
        ImageLimits.from_env({"ARCA_IMAGE_MAX_IMAGE_BYTES": "lots"})
    assert ImageLimits.from_env({"ARCA_IMAGE_MAX_LAYER_ENTRIES": "7"}).layer_entries == 7
    assert ImageLimits.from_env({}) == ImageLimits()


@given(st.text(max_size=30))
def test_parse_size_never_crashes(text: str) -> None:
    try:
        assert parse_size(text, "X") > 0
    except ConfigError:
        pass


@settings(max_examples=30, deadline=None)
@given(size=st.integers(0, 2 * MiB), files=st.integers(1, 6), tail=st.integers(0, MiB),
       limit=st.integers(64 * 1024, 4 * MiB), compression=st.sampled_from(["gzip", "zstd"]))
def test_property_never_more_than_the_limit(tmp_path_factory: pytest.TempPathFactory, size: int,
                                            files: int, tail: int, limit: int,
                                            compression: str) -> None:
    """Whatever the shape of the layer: refused, or what it produced fits the limit; and what
    landed on disk never exceeds the limit (by more than block rounding)."""
    tmp = tmp_path_factory.mktemp("prop")
    blob, diff_id, total = compress_stream(bomb_tar_chunks(size, files=files, tail=tail),
                                           compression)
    lim = ImageLimits(layer_bytes=limit)
    try:
        run_unpack(tmp, blob, compression, diff_id, limits=lim)
    except UnsafeArchive as e:
        assert total > limit, f"refused a layer within the limit: {e}"
    else:
        assert total <= limit
    assert disk_usage(tmp / "dest") <= limit + files * 4096
