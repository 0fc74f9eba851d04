"""Manifest, index, config and reference parsing: valid documents, refusals, fuzzing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.host.images.digest import Digest
from arca.host.images.errors import BadManifest, BadReference
from arca.host.images.manifest import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Index,
    Manifest,
    Platform,
    parse_config,
    parse_manifest,
)
from arca.host.images.reference import Reference
from arca.wire.errors import ArcaError

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64


def oci_manifest(**over: object) -> dict[str, object]:
    m: dict[str, object] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D1,
                   "size": 10},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D2,
                    "size": 20}],
    }
    m.update(over)
    return m


def test_oci_and_docker_manifests_parse() -> None:
    m = parse_manifest(json.dumps(oci_manifest()).encode())
    assert isinstance(m, Manifest) and m.layers[0].digest == Digest("sha256", "b" * 64)
    docker = oci_manifest(mediaType=DOCKER_MANIFEST, config={
        "mediaType": "application/vnd.docker.container.image.v1+json", "digest": D1, "size": 1},
        layers=[{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                 "digest": D2, "size": 2}])
    assert isinstance(parse_manifest(json.dumps(docker).encode()), Manifest)


def test_media_type_from_header_when_the_document_has_none() -> None:
    doc = oci_manifest()
    del doc["mediaType"]
    assert isinstance(parse_manifest(json.dumps(doc).encode(), OCI_MANIFEST), Manifest)


@pytest.mark.parametrize("mt", [OCI_INDEX, DOCKER_LIST])
def test_index_selects_linux_amd64(mt: str) -> None:
    idx = {"schemaVersion": 2, "mediaType": mt, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": D1, "size": 1,
         "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"mediaType": OCI_MANIFEST, "digest": D2, "size": 1,
         "platform": {"os": "linux", "architecture": "amd64"}},
    ]}
    parsed = parse_manifest(json.dumps(idx).encode())
    assert isinstance(parsed, Index)
    assert str(parsed.select(Platform("linux", "amd64")).digest) == D2
    with pytest.raises(BadManifest, match="no manifest for windows/amd64"):
        parsed.select(Platform("windows", "amd64"))


BAD = {
    "schema 1": {"schemaVersion": 1, "name": "x", "fsLayers": []},
    "bad digest": oci_manifest(config={"mediaType": "application/vnd.oci.image.config.v1+json",
                                       "digest": "sha256:xyz", "size": 1}),
    "md5": oci_manifest(config={"mediaType": "application/vnd.oci.image.config.v1+json",
                                "digest": "md5:" + "a" * 32, "size": 1}),
    "negative size": oci_manifest(layers=[{"mediaType":
                                           "application/vnd.oci.image.layer.v1.tar",
                                           "digest": D2, "size": -1}]),
    "bool size": oci_manifest(layers=[{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                       "digest": D2, "size": True}]),
    "foreign layer": oci_manifest(layers=[{
        "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "digest": D2, "size": 1}]),
    "layers not a list": oci_manifest(layers={"a": 1}),
    "too many layers": oci_manifest(layers=[{
        "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": D2, "size": 1}] * 41),
    "unknown type": oci_manifest(mediaType="text/plain"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_manifests_are_refused_by_name(case: str) -> None:
    with pytest.raises(BadManifest):
        parse_manifest(json.dumps(BAD[case]).encode())


def test_oversized_and_non_json_refused() -> None:
    with pytest.raises(BadManifest, match="limit"):
        parse_manifest(b" " * (5 << 20))
    with pytest.raises(BadManifest, match="not valid JSON"):
        parse_manifest(b"\xff\xfe")


def test_config_parses_process_fields() -> None:
    cfg = parse_config(json.dumps({
        "os": "linux", "architecture": "amd64",
        "config": {"User": "app", "Env": ["A=1"], "Entrypoint": ["/e"], "Cmd": None,
                   "WorkingDir": "/w"},
        "rootfs": {"type": "layers", "diff_ids": [D1]}}).encode())
    assert (cfg.user, cfg.env, cfg.entrypoint, cfg.cmd, cfg.working_dir) == (
        "app", ("A=1",), ("/e",), (), "/w")
    with pytest.raises(BadManifest, match="rootfs"):
        parse_config(b'{"rootfs": {"type": "other"}}')
    with pytest.raises(BadManifest, match="Env"):
        parse_config(json.dumps({"rootfs": {"type": "layers", "diff_ids": []},
                                 "config": {"Env": "A=1"}}).encode())


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) |
    st.sampled_from([D1, OCI_MANIFEST, OCI_INDEX, "layers", "sha256:"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["schemaVersion", "mediaType", "config", "layers", "manifests",
                         "digest", "size", "platform", "os", "architecture", "annotations",
                         "rootfs", "diff_ids", "type", "Env", "Cmd", "User"]),
        children, max_size=6),
    max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(JSON)
def test_fuzz_documents_parse_or_raise_bad_manifest(doc: object) -> None:
    data = json.dumps(doc).encode()
    for parse in (parse_manifest, parse_config):
        try:
            parse(data)
        except BadManifest:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes_parse_or_raise_bad_manifest(data: bytes) -> None:
    for parse in (parse_manifest, parse_config):
        try:
            parse(data)
        except BadManifest:
            pass


@pytest.mark.parametrize("ref,expected", [
    ("busybox", "docker.io/library/busybox:latest"),
    ("user/app:1.0", "docker.io/user/app:1.0"),
    ("127.0.0.1:5000/team/app", "127.0.0.1:5000/team/app:latest"),
    ("localhost/app:v1", "localhost/app:v1"),
    (f"quay.io/x/y@{D1}", f"quay.io/x/y@{D1}"),
    (f"quay.io/x/y:t@{D1}", f"quay.io/x/y:t@{D1}"),
])
def test_references_normalize(ref: str, expected: str) -> None:
    assert str(Reference.parse(ref)) == expected


@pytest.mark.parametrize("ref", ["", "UPPER/case", "a b", "x@sha256:zz", "x:", "x:-tag",
                                 "host:5000/", "a//b"])
def test_bad_references_are_refused(ref: str) -> None:
    with pytest.raises(BadReference):
        Reference.parse(ref)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_fuzz_references(ref: str) -> None:
    try:
        r = Reference.parse(ref)
    except ArcaError:
        return
    assert Reference.parse(str(r)) == r  # normalization is idempotent


# -- fuzz: an OCI layout's index.json and the registry's auth challenge ---------------------------
@settings(max_examples=200, deadline=None)
@given(JSON)
def test_fuzz_layout_index(doc: object) -> None:
    import pathlib
    import tempfile

    from arca.host.images import ImageStore, load_layout

    with tempfile.TemporaryDirectory() as d:
        layout = pathlib.Path(d)
        (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        (layout / "index.json").write_text(json.dumps(doc))
        try:
            load_layout(ImageStore(layout / "store"), layout)
        except ArcaError:
            pass
        else:
            raise AssertionError("a layout without blobs cannot load")


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
                 st.builds(lambda s, r: f'{s} realm="{r}",service="x"',
                           st.sampled_from(["Bearer", "Basic", "Digest", "bearer"]),
                           st.sampled_from(["http://127.0.0.1:1/token", "", "ftp://x"]))))
def test_fuzz_auth_challenge(challenge: str) -> None:
    import httpx

    from arca.host.images.registry import Credentials, RegistryClient

    with RegistryClient("127.0.0.1:1", credentials=Credentials("u", "p")) as client:
        try:
            client._authenticate(httpx.Response(401, headers={"www-authenticate": challenge}))
        except ArcaError:
            return
        assert client._auth is not None and client._auth.startswith("Basic ")
