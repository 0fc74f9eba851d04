"""The OCI spec ``arca run`` writes: volumes, annotations, generated init-data."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from arca.host.containers.spec import Volume, build_spec, generated_init_data
from arca.host.imageconfig import ProcessConfig
from arca.wire.errors import InvalidInput
from arca.wire.initdata import InitData

PROC = ProcessConfig(("/bin/app", "x"), ("PATH=/bin",), "/w", 1000, 1000, (10,))


def test_spec_carries_process_annotations_and_mounts(tmp_path: Path) -> None:
    init = generated_init_data("https://kbs.example:8080")
    spec = build_spec(PROC, container_id="c" * 64, hostname="h", tee="sim",
                      volumes=[Volume.parse(f"{tmp_path}:/data:ro")], init_data=init)
    p = spec["process"]
    assert (p["args"], p["env"], p["cwd"]) == (["/bin/app", "x"], ["PATH=/bin"], "/w")
    assert p["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [10]}
    assert "CAP_SETUID" in p["capabilities"]["bounding"]
    assert spec["annotations"]["io.arca.tee"] == "sim"
    assert base64.b64decode(spec["annotations"]["io.arca.init-data"]) == init
    data = [m for m in spec["mounts"] if m["destination"] == "/data"]
    assert data == [{"destination": "/data", "type": "bind", "source": str(tmp_path),
                     "options": ["rbind", "ro", "nosuid", "nodev"]}]
    assert {"type": "network"} not in spec["linux"]["namespaces"]  # host network


def test_generated_init_data_is_valid_and_names_the_kbs() -> None:
    parsed = InitData.parse(generated_init_data("http://127.0.0.1:8080"))
    assert parsed.kbs_url == "http://127.0.0.1:8080" and parsed.algorithm == "sha384"
    for bad in ("ftp://x", 'http://x"\nevil = 1', "kbs"):
        with pytest.raises(InvalidInput):
            generated_init_data(bad)


@pytest.mark.parametrize("spec,match", [
    ("/nonexistent-arca:/x", "does not exist"),
    ("/tmp", "expected SRC:DST"),
    ("/tmp:relative", "absolute"),
    ("/tmp:/", "absolute path other than /"),
    ("/tmp:/x:rx", "'ro' or 'rw'"),
])
def test_bad_volumes_are_refused(spec: str, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        Volume.parse(spec)


def test_unknown_tee_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown tee"):
        build_spec(PROC, container_id="c", hostname="h", tee="quantum")
