"""Bundle reading, TEE selection and the config.json rewrite of contract §3 (no runc)."""

from __future__ import annotations

import base64
import gzip
import json
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.host import annotations as A
from arca.host.runtime.bundle import (
    Bundle,
    BundleError,
    decode_init_data,
    launch_descriptor,
    process_spec,
    read_bundle,
    rewrite_config,
    select_tee,
)
from arca.host.runtime.config import RuntimeConfig, load_config
from arca.wire import constants as C
from arca.wire.errors import ArcaError, ConfigError, InvalidInput

INIT_DATA = b'version = "0.1.0"\nalgorithm = "sha256"\n'


def bundle(annotations: dict[str, str] | None = None, **cfg) -> Bundle:
    config = {"process": {"args": ["sh"], "env": ["PATH=/bin"], "cwd": "/"},
              "root": {"path": "rootfs"}, **cfg}
    if annotations is not None:
        config["annotations"] = annotations
    return Bundle(pathlib.Path("/b"), config)


@pytest.mark.parametrize(
    ("annotations", "default", "want"),
    [
        ({}, "none", "none"),
        ({}, "sim", "sim"),
        ({A.ANNOTATION_TEE: "sim"}, "none", "sim"),
        ({A.ANNOTATION_TEE: "none"}, "sim", "none"),
        ({A.ANNOTATION_TEE: "sim", A.ANNOTATION_CRI_CONTAINER_TYPE: "sandbox"}, "sim", "none"),
        ({A.ANNOTATION_CRI_CONTAINER_TYPE: "sandbox"}, "sim", "none"),
        ({A.ANNOTATION_CRI_CONTAINER_TYPE: "container"}, "sim", "sim"),
    ],
)
def test_select_tee(annotations: dict[str, str], default: str, want: str) -> None:
    assert select_tee(bundle(annotations), default) == want


def test_unknown_and_unavailable_tees_are_refused_by_name() -> None:
    with pytest.raises(BundleError, match="unknown TEE 'xyz'"):
        select_tee(bundle({A.ANNOTATION_TEE: "xyz"}), "none")
    with pytest.raises(BundleError, match="runtime default"):
        select_tee(bundle({}), "bogus")
    with pytest.raises(ConfigError, match="'tdx'.*not available"):
        select_tee(bundle({A.ANNOTATION_TEE: "tdx"}), "none")


def test_read_bundle_errors_name_the_problem(tmp_path: pathlib.Path) -> None:
    with pytest.raises(BundleError, match="has no config.json"):
        read_bundle(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(BundleError, match="malformed config.json"):
        read_bundle(tmp_path)
    (tmp_path / "config.json").write_text("[]")
    with pytest.raises(BundleError, match="not a JSON object"):
        read_bundle(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"annotations": {"a": 1}}))
    with pytest.raises(BundleError, match="annotations"):
        read_bundle(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"root": {"path": "rootfs"}}))
    b = read_bundle(tmp_path)
    assert b.rootfs() == tmp_path / "rootfs"
    assert Bundle(tmp_path, {"root": {"path": "/abs"}}).rootfs() == pathlib.Path("/abs")
    with pytest.raises(BundleError, match="root.path"):
        Bundle(tmp_path, {}).rootfs()


def test_process_spec_measures_the_original_process() -> None:
    spec = process_spec({"args": ["/app", "-x"], "cwd": "/srv", "user": {"uid": 1000, "gid": 5},
                         "env": ["Z=1", "HOSTNAME=abc", "A=2", "TERM=xterm"]})
    assert spec.args == ("/app", "-x") and spec.cwd == "/srv"
    assert (spec.uid, spec.gid) == (1000, 5)
    assert spec.env == ("A=2", "Z=1")  # orchestrator variables dropped, sorted
    d = launch_descriptor("sim", "sha256:g", "sha256:r", {"args": ["x"]})
    assert d.process.cwd == "/" and d.process.uid == 0


@pytest.mark.parametrize(
    "proc",
    [{}, {"args": []}, {"args": [1]}, {"args": ["x"], "env": "A=1"}, {"args": ["x"], "cwd": "rel"},
     {"args": ["x"], "user": {"uid": -1}}, {"args": ["x"], "user": {"uid": True}},
     {"args": ["x"], "user": []}],
)
def test_bad_process_is_refused(proc: dict) -> None:
    with pytest.raises(BundleError, match="process"):
        process_spec(proc)


def test_rewrite_config_follows_the_contract() -> None:
    original = {
        "process": {"terminal": True, "args": ["sh"], "env": ["A=1"], "cwd": "/x",
                    "user": {"uid": 5, "gid": 6, "additionalGids": [7]},
                    "capabilities": {"bounding": ["CAP_KILL"]}, "rlimits": [{"type": "X"}]},
        "mounts": [{"destination": "/run", "type": "tmpfs", "source": "tmpfs"}],
    }
    new = rewrite_config(original, td_dir=pathlib.Path("/r/td/c1"),
                         guest_runtime_path=pathlib.Path("/g"), agent_args=["/.arca/agent"],
                         agent_env=["PATH=/x"])
    assert original["process"]["args"] == ["sh"]  # input untouched
    dests = [m["destination"] for m in new["mounts"]]
    assert dests == ["/run", C.TD_RUN_DIR, C.SIM_DEVICE_DIR, C.GUEST_RUNTIME_MOUNT]
    tmpfs, dev, gr = new["mounts"][1:]
    assert tmpfs["type"] == "tmpfs" and {"nosuid", "nodev", "mode=0755"} <= set(tmpfs["options"])
    assert dev["source"] == "/r/td/c1" and "ro" in dev["options"] and "rbind" in dev["options"]
    assert gr["source"] == "/g" and "ro" in gr["options"]
    p = new["process"]
    assert p["args"] == ["/.arca/agent"] and p["env"] == ["PATH=/x"]
    assert p["user"] == {"uid": 0, "gid": 0} and p["cwd"] == "/"
    assert p["terminal"] is True and p["capabilities"] == {"bounding": ["CAP_KILL"]}
    assert p["rlimits"] == [{"type": "X"}]


def test_init_data_plain_and_gzip() -> None:
    assert decode_init_data(bundle({})) is None
    for enc in (INIT_DATA, gzip.compress(INIT_DATA)):
        b = bundle({A.ANNOTATION_INIT_DATA: base64.b64encode(enc).decode()})
        assert decode_init_data(b) == INIT_DATA
    with pytest.raises(InvalidInput):
        decode_init_data(bundle({A.ANNOTATION_INIT_DATA: "%%%"}))
    with pytest.raises(InvalidInput):
        decode_init_data(bundle({A.ANNOTATION_INIT_DATA: base64.b64encode(b"= =").decode()}))
    bomb = gzip.compress(b"#" * (10 * 1024 * 1024))
    with pytest.raises(InvalidInput):
        decode_init_data(bundle({A.ANNOTATION_INIT_DATA: base64.b64encode(bomb).decode()}))


def test_runtime_config_file_and_env(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "runtime.json"
    assert load_config({"ARCA_RUNTIME_CONFIG": str(f)}) == RuntimeConfig()
    f.write_text(json.dumps({"runc": "/usr/sbin/runc", "default_tee": "sim"}))
    assert load_config({"ARCA_RUNTIME_CONFIG": str(f)}) == RuntimeConfig("/usr/sbin/runc", "sim")
    env = {"ARCA_RUNTIME_CONFIG": str(f), "ARCA_TEE": "none", "ARCA_RUNC": "/x/runc"}
    assert load_config(env) == RuntimeConfig("/x/runc", "none")
    for bad in ("{", "[]", json.dumps({"runc": 1}), json.dumps({"nope": "x"})):
        f.write_text(bad)
        with pytest.raises(ConfigError, match=str(f)):
            load_config({"ARCA_RUNTIME_CONFIG": str(f)})


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c,
                                                                        max_size=4),
                    max_leaves=20))
def test_fuzz_config_json_only_typed_errors(tmp_path_factory, value) -> None:
    d = tmp_path_factory.mktemp("b")
    (d / "config.json").write_text(json.dumps(value))
    try:
        b = read_bundle(d)
        select_tee(b, "sim")
        b.rootfs()
        process_spec(b.config.get("process") if isinstance(b.config.get("process"), dict) else {})
        decode_init_data(b)
    except ArcaError:
        pass
