"""Pulls from a real docker-registry (anonymous, basic auth + TLS), manifest formats, and
every refusal leaving the store consistent."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pathlib
import subprocess
import sys

import pytest

from arca.host.images import ImageStore, load_layout, pull
from arca.host.images.digest import Digest
from arca.host.images.errors import (
    DigestMismatch,
    RegistryError,
    RegistryUnavailable,
    UnsafeArchive,
)
from arca.host.images.registry import Credentials
from arca.host.measure import mounted_rootfs
from tests.support.images import build_busybox_image, empty_store, push
from tests.support.imagetrees import (
    push_raw,
    tar_bytes,
    tiny_registry,
    tree_listing,
    write_layout,
)
from tests.support.registry import (
    NEEDS_REGISTRY_AND_ROOT,
    TokenServer,
    make_tls_cert,
    run_registry,
    write_htpasswd,
)

pytestmark = [
    pytest.mark.integration,
    NEEDS_REGISTRY_AND_ROOT,
]


@pytest.fixture(scope="module")
def image_layout(tmp_path_factory: pytest.TempPathFactory) -> str:
    base = tmp_path_factory.mktemp("img")
    return build_busybox_image(base / "layout", "v1",
                               files={"/app/run.sh": b"#!/bin/sh\necho hi\n"},
                               user="app", workdir="/app")


@pytest.fixture(scope="module")
def umoci_tree(image_layout: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("umoci") / "bundle"
    subprocess.run(["umoci", "unpack", "--image", image_layout, str(out)], check=True,
                   capture_output=True)
    return tree_listing(out / "rootfs")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, image_layout: str):  # type: ignore[no-untyped-def]
    with run_registry(tmp_path_factory.mktemp("reg")) as reg:
        push(image_layout, reg.host, "arca/busybox:v1")
        yield reg


@pytest.fixture
def store(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> ImageStore:
    return empty_store(tmp_path, monkeypatch)


def assert_consistent(store: ImageStore) -> None:
    tmp = store.root / "tmp"
    assert not tmp.exists() or os.listdir(tmp) == [], "temporary files left behind"


def test_pull_anonymous_equals_umoci_unpack(registry, store: ImageStore, umoci_tree: dict
                                           ) -> None:
    rec = pull(store, f"{registry.host}/arca/busybox:v1", insecure=True)
    assert rec.name == f"{registry.host}/arca/busybox:v1"
    assert [r.name for r in store.list()] == [rec.name]
    with mounted_rootfs(store, rec) as rootfs:
        assert tree_listing(rootfs) == umoci_tree
    # a second pull re-uses every blob and layer
    before = {p: p.stat().st_ino for p in (store.root / "layers").iterdir()}
    pull(store, f"{registry.host}/arca/busybox:v1", insecure=True)
    assert {p: p.stat().st_ino for p in (store.root / "layers").iterdir()} == before
    assert_consistent(store)


def test_plain_http_needs_insecure(registry, store: ImageStore) -> None:
    with pytest.raises(RegistryUnavailable, match="--insecure"):
        pull(store, f"{registry.host}/arca/busybox:v1")
    assert store.list() == []


def test_unknown_tag_is_a_clear_error(registry, store: ImageStore) -> None:
    with pytest.raises(RegistryError, match="not found"):
        pull(store, f"{registry.host}/arca/busybox:nope", insecure=True)


def test_pull_basic_auth_over_tls(tmp_path: pathlib.Path, image_layout: str,
                                  store: ImageStore, umoci_tree: dict) -> None:
    cert, key = make_tls_cert(tmp_path / "tls")
    htpasswd = write_htpasswd(tmp_path / "htpasswd", "alice", "s3cret")
    with run_registry(tmp_path / "reg", htpasswd=htpasswd, tls_cert=cert, tls_key=key) as reg:
        push(image_layout, reg.host, "private/bb:v1", creds="alice:s3cret")
        ref = f"{reg.host}/private/bb:v1"
        with pytest.raises(RegistryError, match="requires credentials"):
            pull(store, ref, ca_file=str(cert))
        with pytest.raises(RegistryError, match="credentials"):
            pull(store, ref, ca_file=str(cert), credentials=Credentials("alice", "wrong"))
        with pytest.raises(RegistryUnavailable):  # TLS verified: unknown CA refused
            pull(store, ref, credentials=Credentials("alice", "s3cret"))
        rec = pull(store, ref, ca_file=str(cert), credentials=Credentials("alice", "s3cret"))
        with mounted_rootfs(store, rec) as rootfs:
            assert tree_listing(rootfs) == umoci_tree
        # the CLI finds the credentials in Docker's config.json
        docker_cfg = tmp_path / "docker"
        docker_cfg.mkdir()
        (docker_cfg / "config.json").write_text(json.dumps({"auths": {reg.host: {
            "auth": base64.b64encode(b"alice:s3cret").decode()}}}))
        env = {**os.environ, "DOCKER_CONFIG": str(docker_cfg),
               "ARCA_ROOT": str(tmp_path / "cli-root"), "ARCA_RUN": str(tmp_path / "cli-run")}
        res = subprocess.run([str(pathlib.Path(sys.executable).parent / "arca"), "image", "pull",
                              "--ca-cert", str(cert), ref], env=env, capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == [ref, rec.digest]
    assert_consistent(store)


@pytest.mark.parametrize("fmt", ["v2s2", "oci"])
def test_pull_docker_v2_and_oci_manifests(registry, store: ImageStore, image_layout: str,
                                          umoci_tree: dict, fmt: str) -> None:
    dest = f"{registry.host}/arca/fmt-{fmt}:v1"
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--format", fmt,
                    f"oci:{image_layout}", f"docker://{dest}"], check=True)
    rec = pull(store, dest, insecure=True)
    manifest = json.loads(store.blob_path(
        Digest.parse(rec.digest)
    ).read_bytes())
    expected = {"v2s2": "application/vnd.docker.distribution.manifest.v2+json",
                "oci": "application/vnd.oci.image.manifest.v1+json"}[fmt]
    # OCI manifests may omit the optional mediaType field (umoci does); Docker's must have it
    assert manifest.get("mediaType", "application/vnd.oci.image.manifest.v1+json") == expected
    with mounted_rootfs(store, rec) as rootfs:
        assert tree_listing(rootfs) == umoci_tree


LAYERS = [tar_bytes([("bin/", "dir", b""), ("bin/tool", "file", "echo one"),
                     ("etc/", "dir", b""), ("etc/conf", "file", "a=1")]),
          tar_bytes([("etc/", "dir", b""), ("etc/.wh.conf", "file", ""),
                     ("etc/new", "file", "b=2")])]


@pytest.mark.parametrize("compression", ["gzip", "zstd", ""])
def test_pull_each_layer_compression(registry, store: ImageStore, tmp_path: pathlib.Path,
                                     compression: str) -> None:
    parts = write_layout(tmp_path / "lay", LAYERS, compression=compression)
    repo = f"arca/comp{compression or 'none'}"
    push_raw(registry.url, repo, "v1", tmp_path / "lay", parts["manifest"],  # type: ignore[arg-type]
             "application/vnd.oci.image.manifest.v1+json",
             [parts["config"], *parts["layers"]])  # type: ignore[list-item]
    rec = pull(store, f"{registry.host}/{repo}:v1", insecure=True)
    with mounted_rootfs(store, rec) as rootfs:
        assert sorted(tree_listing(rootfs)) == ["bin", "bin/tool", "etc", "etc/new"]
        assert (rootfs / "bin/tool").read_text() == "echo one"


def test_index_chooses_linux_amd64(registry, store: ImageStore, tmp_path: pathlib.Path) -> None:
    amd = write_layout(tmp_path / "amd", [tar_bytes([("which", "file", "amd64")])])
    arm = write_layout(tmp_path / "arm", [tar_bytes([("which", "file", "arm64")])])
    descs = []
    for name, parts, arch in (("arm", arm, "arm64"), ("amd", amd, "amd64")):
        d = push_raw(registry.url, "arca/multi", name, tmp_path / name,
                     parts["manifest"], "application/vnd.oci.image.manifest.v1+json",  # type: ignore[arg-type]
                     [parts["config"], *parts["layers"]])  # type: ignore[list-item]
        descs.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d,
                      "size": len(parts["manifest"]),  # type: ignore[arg-type]
                      "platform": {"os": "linux", "architecture": arch}})
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": descs}).encode()
    push_raw(registry.url, "arca/multi", "latest", tmp_path, index,
             "application/vnd.oci.image.index.v1+json", [])
    rec = pull(store, f"{registry.host}/arca/multi", insecure=True)
    assert rec.digest == descs[1]["digest"]
    with mounted_rootfs(store, rec) as rootfs:
        assert (rootfs / "which").read_text() == "amd64"


# -- refusals -----------------------------------------------------------------------------------
def _registry_blob(reg, digest: str) -> pathlib.Path:  # type: ignore[no-untyped-def]
    hexd = digest.split(":")[1]
    return (reg.root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexd[:2]
            / hexd / "data")


def test_corrupted_blob_refused_then_good_pull_succeeds(tmp_path: pathlib.Path, store: ImageStore
                                                        ) -> None:
    parts = write_layout(tmp_path / "lay", LAYERS)
    with run_registry(tmp_path / "reg") as reg:
        push_raw(reg.url, "arca/corrupt", "v1", tmp_path / "lay", parts["manifest"],  # type: ignore[arg-type]
                 "application/vnd.oci.image.manifest.v1+json",
                 [parts["config"], *parts["layers"]])  # type: ignore[list-item]
        layer = parts["layers"][1]  # type: ignore[index]
        blob = _registry_blob(reg, "sha256:" + hashlib.sha256(layer).hexdigest())
        good = blob.read_bytes()
        blob.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
        with pytest.raises(DigestMismatch, match="digest mismatch"):
            pull(store, f"{reg.host}/arca/corrupt:v1", insecure=True)
        assert store.list() == []
        assert_consistent(store)
        blob.write_bytes(good)
        rec = pull(store, f"{reg.host}/arca/corrupt:v1", insecure=True)
        assert [r.name for r in store.list()] == [rec.name]


def test_truncated_download_refused(tmp_path: pathlib.Path, store: ImageStore) -> None:
    parts = write_layout(tmp_path / "lay", LAYERS)
    layers: list[bytes] = parts["layers"]  # type: ignore[assignment]
    blobs = {"sha256:" + hashlib.sha256(b).hexdigest(): b
             for b in [parts["config"], *layers]}  # type: ignore[list-item]
    victim = "sha256:" + hashlib.sha256(layers[0]).hexdigest()
    with tiny_registry({"v1": parts["manifest"]}, blobs, die_in={victim}) as host:  # type: ignore[dict-item]
        with pytest.raises((RegistryUnavailable, DigestMismatch), match="broke off|truncated"):
            pull(store, f"{host}/arca/t:v1", insecure=True)
        assert store.list() == []
        assert_consistent(store)
        assert not store.blob_path(
            Digest.parse(victim)
        ).exists()
    # a connection that breaks once is retried
    with tiny_registry({"v1": parts["manifest"]}, blobs, die_in={victim},  # type: ignore[dict-item]
                       die_once=True) as host:
        pull(store, f"{host}/arca/t:v1", insecure=True)
    assert len(store.list()) == 1


def test_wrong_digest_in_manifest_refused(tmp_path: pathlib.Path, store: ImageStore) -> None:
    parts = write_layout(tmp_path / "lay", LAYERS)
    layers: list[bytes] = parts["layers"]  # type: ignore[assignment]
    manifest = json.loads(parts["manifest"])  # type: ignore[arg-type]
    lie = "sha256:" + hashlib.sha256(b"not this layer").hexdigest()
    manifest["layers"][0]["digest"] = lie
    blobs = {"sha256:" + hashlib.sha256(b).hexdigest(): b for b in [parts["config"], *layers]}  # type: ignore[list-item]
    blobs[lie] = layers[0]  # the server serves the real layer under the false digest
    with tiny_registry({"v1": json.dumps(manifest).encode()}, blobs) as host:
        with pytest.raises(DigestMismatch, match="digest mismatch"):
            pull(store, f"{host}/arca/w:v1", insecure=True)
    assert store.list() == []
    assert_consistent(store)


def test_zip_slip_layer_refused(registry, tmp_path: pathlib.Path, store: ImageStore) -> None:
    evil = tar_bytes([("ok", "file", "fine"), ("../../../../tmp/arca-zip-slip", "file", "pwn")])
    parts = write_layout(tmp_path / "lay", [evil])
    push_raw(registry.url, "arca/slip", "v1", tmp_path / "lay", parts["manifest"],  # type: ignore[arg-type]
             "application/vnd.oci.image.manifest.v1+json",
             [parts["config"], *parts["layers"]])  # type: ignore[list-item]
    with pytest.raises(UnsafeArchive, match=r"'\.\.' component refused"):
        pull(store, f"{registry.host}/arca/slip:v1", insecure=True)
    with pytest.raises(UnsafeArchive):
        load_layout(store, tmp_path / "lay")
    assert not pathlib.Path("/tmp/arca-zip-slip").exists()
    assert store.list() == []
    assert not (store.root / "layers").exists() or os.listdir(store.root / "layers") == []
    assert_consistent(store)


def test_concurrent_pulls_of_one_image(registry, tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "ARCA_ROOT": str(tmp_path / "root"), "ARCA_RUN": str(tmp_path / "run")}
    arca = str(pathlib.Path(sys.executable).parent / "arca")
    procs = [subprocess.Popen([arca, "image", "pull", "--insecure", "-q",
                               f"{registry.host}/arca/busybox:v1"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    store = ImageStore(tmp_path / "root" / "images")
    assert len(store.list()) == 1
    assert len(os.listdir(store.root / "layers")) == 2


def test_pull_with_bearer_token_auth(tmp_path: pathlib.Path, image_layout: str,
                                     store: ImageStore, umoci_tree: dict) -> None:
    tokens = TokenServer(tmp_path / "tok", {"bob": "hunter2"})
    try:
        with run_registry(tmp_path / "reg", token_auth=tokens.registry_config()) as reg:
            push(image_layout, reg.host, "team/bb:v1", creds="bob:hunter2")
            ref = f"{reg.host}/team/bb:v1"
            with pytest.raises(RegistryError, match="access denied|credentials"):
                pull(store, ref, insecure=True)  # anonymous token grants nothing
            # plain HTTP with credentials only when asked for by name (see test_images_creds)
            rec = pull(store, f"http://{ref}", insecure=True,
                       credentials=Credentials("bob", "hunter2"))
            with mounted_rootfs(store, rec) as rootfs:
                assert tree_listing(rootfs) == umoci_tree
        assert any(r["user"] == "bob" and "repository:team/bb:pull" in r["scope"]
                   for r in tokens.requests)
    finally:
        tokens.close()
