"""Decompression bombs pulled from a real docker-registry and loaded from an OCI archive
written by skopeo: refused with the layer and the limit named, nothing half-written, and a good
image pulled into the same store afterwards."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from arca.host.images import ImageStore, load_archive, pull
from arca.host.images.digest import Digest
from arca.host.images.errors import UnsafeArchive
from arca.host.images.limits import ImageLimits
from tests.support.bombs import bomb_tar_chunks, compress_stream, write_bomb_layout
from tests.support.imagetrees import push_raw, tar_bytes, write_layout
from tests.support.registry import registry_available, run_registry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not registry_available() or not shutil.which("skopeo")
                       or os.geteuid() != 0, reason="needs docker-registry, skopeo and root"),
]

MiB = 1 << 20
BOMB = 256 * MiB  # what each bomb expands to; the test limit is 8 MiB per layer
LOW = ImageLimits(layer_bytes=8 * MiB, image_bytes=16 * MiB)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[pathlib.Path, dict]]:
    """compression -> (OCI layout of a one-layer bomb image, its parts)."""
    base = tmp_path_factory.mktemp("bombs")
    out = {}
    for compression in ("gzip", "zstd"):
        blob, diff_id, size = compress_stream(bomb_tar_chunks(BOMB), compression)
        assert len(blob) < size // 500, "a bomb is small on the wire"
        layout = base / compression
        out[compression] = (layout, write_bomb_layout(layout, [(blob, diff_id, compression)]))
    return out


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, bombs):  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("reg")
    with run_registry(base / "reg") as reg:
        for compression, (layout, parts) in bombs.items():
            push_raw(reg.url, f"bomb/{compression}", "v1", layout, parts["manifest"],
                     OCI_MANIFEST, [parts["config"], *parts["layers"]])
        good = write_layout(base / "good", [tar_bytes([("hello", "file", "world")])])
        push_raw(reg.url, "ok/good", "v1", base / "good", good["manifest"],  # type: ignore[arg-type]
                 OCI_MANIFEST, [good["config"], *good["layers"]])  # type: ignore[list-item]
        yield reg


@pytest.fixture
def root(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    monkeypatch.setenv("ARCA_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("ARCA_RUN", str(tmp_path / "run"))
    return tmp_path / "root" / "images"


def assert_nothing_half_written(store: ImageStore) -> None:
    assert store.list() == []
    for sub in ("tmp", "layers"):
        d = store.root / sub
        assert not d.exists() or os.listdir(d) == [], f"{sub}/ not empty"


def disk_usage(path: pathlib.Path) -> int:
    return sum(os.lstat(os.path.join(d, f)).st_blocks * 512
               for d, _, files in os.walk(path) for f in files)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_bomb_pulled_from_registry_is_refused(registry, bombs, root: pathlib.Path,  # type: ignore[no-untyped-def]
                                              compression: str) -> None:
    store = ImageStore(root, limits=LOW)
    layer = Digest.of(bombs[compression][1]["layers"][0])
    with pytest.raises(UnsafeArchive, match=f"layer {layer}: decompresses to more than 8 MiB "
                                            r"\(per-layer limit; raise ARCA_IMAGE_MAX_LAYER"):
        pull(store, f"{registry.host}/bomb/{compression}:v1", insecure=True)
    assert_nothing_half_written(store)
    assert disk_usage(store.root) < 2 * MiB  # the compressed blob only: it never expanded
    rec = pull(store, f"{registry.host}/ok/good:v1", insecure=True)
    assert [r.name for r in store.list()] == [rec.name]
    assert (store.layer_dir(rec.layers[0].chain_id) / "hello").read_text() == "world"


def test_bomb_pull_through_the_cli_is_a_clear_error(registry, tmp_path: pathlib.Path  # type: ignore[no-untyped-def]
                                                    ) -> None:
    env = {**os.environ, "ARCA_ROOT": str(tmp_path / "root"), "ARCA_RUN": str(tmp_path / "run"),
           "ARCA_IMAGE_MAX_LAYER_BYTES": "8M"}
    arca = str(pathlib.Path(sys.executable).parent / "arca")
    res = subprocess.run([arca, "image", "pull", "--insecure", "-q",
                          f"{registry.host}/bomb/zstd:v1"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 125, res.stderr
    assert "decompresses to more than 8 MiB" in res.stderr
    assert "Traceback" not in res.stderr
    res = subprocess.run([arca, "image", "ls", "--json"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "[]"


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_bomb_in_skopeo_oci_archive_is_refused(bombs, root: pathlib.Path,  # type: ignore[no-untyped-def]
                                               tmp_path: pathlib.Path, compression: str) -> None:
    layout, parts = bombs[compression]
    archive = tmp_path / "bomb.tar"
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout}:latest",
                    f"oci-archive:{archive}:latest"], check=True, capture_output=True)
    store = ImageStore(root, limits=LOW)
    layer = Digest.of(parts["layers"][0])
    with pytest.raises(UnsafeArchive, match=f"layer {layer}: decompresses to more than 8 MiB"):
        load_archive(store, archive)
    assert_nothing_half_written(store)
    good = write_layout(tmp_path / "good", [tar_bytes([("hello", "file", "world")])])
    del good
    good_archive = tmp_path / "good.tar"
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{tmp_path / 'good'}:latest",
                    f"oci-archive:{good_archive}:latest"], check=True, capture_output=True)
    assert load_archive(store, good_archive).layers
