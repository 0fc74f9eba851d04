"""Review findings in the image store: hostile JSON is a BadManifest, never a traceback."""

from __future__ import annotations

import pathlib

import pytest

from arca.host.images import ImageStore, load_layout
from arca.host.images.errors import BadManifest
from arca.host.images.manifest import parse_config, parse_manifest

DEEP = b"[" * 20000  # json.loads raises RecursionError (not ValueError) on this


def test_review_deeply_nested_manifest_and_config_are_bad_manifest() -> None:
    with pytest.raises(BadManifest):
        parse_manifest(DEEP)
    with pytest.raises(BadManifest):
        parse_config(DEEP)


@pytest.mark.parametrize("index", [b"{not json", b"\xff\xfe", DEEP])
@pytest.mark.parametrize("oci_layout", [b'{"imageLayoutVersion": "1.0.0"}', DEEP])
def test_review_malformed_layout_json_is_bad_manifest(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, index: bytes,
        oci_layout: bytes) -> None:
    monkeypatch.setenv("ARCA_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("ARCA_RUN", str(tmp_path / "run"))
    layout = tmp_path / "layout"
    layout.mkdir()
    (layout / "oci-layout").write_bytes(oci_layout)
    (layout / "index.json").write_bytes(index)
    with pytest.raises(BadManifest):
        load_layout(ImageStore(), layout)
