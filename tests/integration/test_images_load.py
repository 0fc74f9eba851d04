"""``arca image load`` from OCI layouts written by umoci and skopeo, and from OCI archives; the
image CLI (ls/inspect/rm/prune) in-process."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

import pytest

from arca.cli.main import main
from arca.host.images import ImageStore, load_archive, load_layout, resolve
from arca.host.images.errors import BadManifest, DigestMismatch, ImageNotFound
from arca.host.measure import mounted_rootfs
from tests.support.images import build_busybox_image, empty_store
from tests.support.imagetrees import tree_listing

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (shutil.which("umoci") and shutil.which("skopeo"))
                       or os.geteuid() != 0, reason="needs umoci, skopeo and root"),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    base = tmp_path_factory.mktemp("img")
    ref = build_busybox_image(base / "layout", "v1", files={"/app/x": b"x\n"})
    subprocess.run(["umoci", "unpack", "--image", ref, str(base / "bundle")], check=True,
                   capture_output=True)
    return ref, tree_listing(base / "bundle" / "rootfs")


def cli(*args: str) -> int:
    """Run ``arca ARGS`` in-process; its exit code."""
    try:
        main(list(args))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


@pytest.fixture
def store(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> ImageStore:
    return empty_store(tmp_path, monkeypatch)


def test_load_umoci_layout_equals_umoci_unpack(built: tuple[str, dict], store: ImageStore
                                               ) -> None:
    ref, tree = built
    layout, tag = ref.rsplit(":", 1)
    rec = load_layout(store, pathlib.Path(layout), tag=tag)
    with mounted_rootfs(store, rec) as rootfs:
        assert tree_listing(rootfs) == tree


@pytest.mark.parametrize("fmt", ["oci", "v2s2"])
def test_load_skopeo_layout_and_archive(built: tuple[str, dict], store: ImageStore,
                                        tmp_path: pathlib.Path, fmt: str) -> None:
    ref, tree = built
    dest = tmp_path / "skopeo-layout"
    archive = tmp_path / "image.tar"
    fmt_args = ["--format", fmt] if fmt == "oci" else []
    subprocess.run(["skopeo", "copy", "--quiet", *fmt_args, f"oci:{ref}", f"oci:{dest}:s1"],
                   check=True)
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{ref}", f"oci-archive:{archive}:a1"],
                   check=True)
    r1 = load_layout(store, dest, tag="s1", name="local/skopeo:1")
    r2 = load_archive(store, archive)
    for rec in (r1, r2):
        with mounted_rootfs(store, rec) as rootfs:
            assert tree_listing(rootfs) == tree
    assert {r.name for r in store.list()} == {"local/skopeo:1",
                                              f"oci-archive:{archive}:latest"}
    # "oci:PATH:TAG" resolves through the same loader
    assert resolve(store, f"oci:{dest}:s1").digest == r1.digest


def test_layout_errors_are_clear(built: tuple[str, dict], store: ImageStore,
                                 tmp_path: pathlib.Path) -> None:
    ref, _ = built
    layout = pathlib.Path(ref.rsplit(":", 1)[0])
    with pytest.raises(ImageNotFound, match="no image tagged 'nope'"):
        load_layout(store, layout, tag="nope")
    with pytest.raises(BadManifest, match="not an OCI layout"):
        load_layout(store, tmp_path)
    # a layout whose layer blob was tampered with is refused, and the store stays empty
    copy = tmp_path / "copy"
    shutil.copytree(layout, copy)
    index = json.loads((copy / "index.json").read_text())
    mdig = next(m["digest"] for m in index["manifests"]
                if m["annotations"]["org.opencontainers.image.ref.name"] == "v1")
    manifest = json.loads((copy / "blobs/sha256" / mdig.split(":")[1]).read_text())
    blob = copy / "blobs/sha256" / manifest["layers"][-1]["digest"].split(":")[1]
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(DigestMismatch):
        load_layout(store, copy, tag="v1")
    assert store.list() == []


def test_image_cli_ls_inspect_rm_prune(built: tuple[str, dict], store: ImageStore,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    ref, _ = built
    layout, tag = ref.rsplit(":", 1)
    assert cli("image", "load", layout, "--tag", tag, "--name", "local/bb:v1") == 0
    assert cli("image", "ls") == 0
    out = capsys.readouterr().out
    assert "local/bb:v1" in out
    assert cli("image", "inspect", "local/bb:v1") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["image_config"]["config"]["Cmd"] == ["/bin/sh"]
    assert len(os.listdir(store.root / "layers")) == 2
    assert cli("image", "rm", "local/bb:v1") == 0
    assert cli("image", "prune") == 0
    capsys.readouterr()
    assert store.list() == []
    assert os.listdir(store.root / "layers") == []
    assert os.listdir(store.root / "blobs" / "sha256") == []
    assert cli("image", "inspect", "local/bb:v1") == 125
    err = capsys.readouterr().err
    assert err.startswith("arca: error: image 'local/bb:v1' is not in the store")
    assert "Traceback" not in err


def test_cli_errors_are_one_line(store: ImageStore, capsys: pytest.CaptureFixture[str],
                                 tmp_path: pathlib.Path) -> None:
    assert cli("image", "pull", "Not/A/Valid:Ref") == 125
    err = capsys.readouterr().err
    assert err.startswith("arca: error: invalid repository name") and err.count("\n") == 1
    assert cli("image", "load", str(tmp_path)) == 125
    assert "is not an OCI layout" in capsys.readouterr().err
    assert cli("image", "pull", "--insecure", "127.0.0.1:1/x/y:z") == 125
    err = capsys.readouterr().err
    assert "registry 127.0.0.1:1" in err and "Traceback" not in err
