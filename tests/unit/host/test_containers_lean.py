"""The import-lean pieces of ``arca run`` (ADR 0006): the container store without dataclasses,
re, datetime or pathlib, its crash tolerance (records are not fsynced), the run-plan cache and
its invalidation, and the posix_spawn helper that replaced subprocess."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arca.errors import InvalidInput, NotFound, StateError
from arca.host import paths
from arca.host.containers import runplan, spawn, state
from arca.host.containers.state import ContainerRecord, ContainerStore


@pytest.mark.parametrize("env", [{}, {"ARCA_ROOT": "/x/root", "ARCA_RUN": "/y/run"},
                                 {"ARCA_ROOT": "rel", "ARCA_RUN": ""}])
def test_dirs_equal_the_paths_module(monkeypatch: pytest.MonkeyPatch,
                                     env: dict[str, str]) -> None:
    for k in ("ARCA_ROOT", "ARCA_RUN"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert state.root_dir() == str(paths.root_dir()) or (
        env.get("ARCA_ROOT") == "" and paths.root_dir() == Path(""))
    assert Path(state.run_dir()) == paths.run_dir()


_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")


@settings(max_examples=400)
@given(st.text(alphabet="aZ09_.-/ é\n", max_size=140))
def test_name_check_equals_the_regex(name: str) -> None:
    assert state.valid_name(name) == bool(_NAME.fullmatch(name))


@given(st.text(alphabet="0123456789abcdefABX", max_size=70))
def test_id_checks_equal_the_regexes(cid: str) -> None:
    assert state.valid_id(cid) == bool(re.fullmatch(r"[0-9a-f]{64}", cid))
    assert state.is_id_prefix(cid) == bool(re.fullmatch(r"[0-9a-f]{1,64}", cid))


def test_now_has_datetimes_format() -> None:
    before = dt.datetime.now(dt.UTC)
    text = state.now()
    after = dt.datetime.now(dt.UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", text)
    assert before - dt.timedelta(milliseconds=1) <= dt.datetime.fromisoformat(text) <= after


def _rec(**kw: object) -> ContainerRecord:
    base: dict[str, object] = dict(id="a" * 64, name="n", image="img", image_digest="sha256:x",
                                   tee="sim", args=("sh",), created=state.now())
    return ContainerRecord(**{**base, **kw})


def test_record_round_trip_replace_and_immutability() -> None:
    rec = _rec(process={"args": ["sh"], "user": {"uid": 0}})
    obj = rec.to_json()
    assert list(obj) == ["id", "name", "image", "image_digest", "tee", "args", "created",
                         "status", "pid", "monitor_pid", "exit_code", "started", "finished",
                         "auto_remove", "detached", "error", "process", "tty", "interactive",
                         "paused", "restart_policy", "restart_count", "manual_stop"]
    assert obj["args"] == ["sh"] and obj["status"] == "created" and obj["exit_code"] is None
    assert ContainerRecord.from_json(json.loads(json.dumps(obj))) == rec
    changed = rec.replace(status="running", pid=7)
    assert (changed.status, changed.pid, rec.status) == ("running", 7, "created")
    with pytest.raises(AttributeError):
        rec.status = "x"  # type: ignore[misc]
    obj["process"]["user"]["uid"] = 5  # a copy: the record does not change
    assert rec.process["user"]["uid"] == 0
    with pytest.raises(TypeError, match="unknown"):
        _rec(bogus=1)
    with pytest.raises(TypeError, match="lacks"):
        ContainerRecord(id="a" * 64)


def test_store_create_find_update_delete(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path / "c")
    rec = store.create(name="web", image="i", image_digest="d", tee="none", args=())
    assert os.stat(store.dir(rec.id)).st_mode & 0o777 == 0o700
    assert store.find("web") == rec == store.find(rec.id[:5])
    assert store.update(rec.id, status="running").status == "running"
    with pytest.raises(StateError, match="already in use"):
        store.create(name="web", image="i", image_digest="d", tee="none", args=())
    with pytest.raises(InvalidInput, match="invalid container name"):
        store.create(name="-x", image="i", image_digest="d", tee="none", args=())
    store.delete(rec.id)
    assert store.list() == [] and not os.path.exists(store.dir(rec.id))
    with pytest.raises(NotFound):
        store.find("web")


@pytest.mark.parametrize("damage", [b"", b"{", b"[]", b'{"id": 1}', b"\xff"])
def test_unreadable_record_after_a_crash_is_listed_and_removable(tmp_path: Path,
                                                                 damage: bytes) -> None:
    """Records are written without fsync: a host crash may leave one unreadable (or the names
    file). Neither may break the other containers or hide the container from `arca rm`."""
    store = ContainerStore(tmp_path / "c")
    keep = store.create(name="keep", image="i", image_digest="d", tee="none", args=())
    lost = store.create(name="lost", image="i", image_digest="d", tee="none", args=())
    Path(store.dir(lost.id), "container.json").write_bytes(damage)
    (tmp_path / "c" / "names.json").write_bytes(damage)
    listed = {r.id: r for r in store.list()}
    assert listed[keep.id] == keep
    assert listed[lost.id].status == "error" and "unreadable" in str(listed[lost.id].error)
    assert store.find("keep") == keep  # names rebuilt from the records
    assert store.find(lost.id).status == "error"
    store.delete(lost.id)
    assert [r.id for r in store.list()] == [keep.id]


def test_remove_tree_does_not_follow_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_text("x")
    (tree / "link").symlink_to(outside)
    (tree / "a" / "flink").symlink_to(outside / "keep")
    state.remove_tree(str(tree))
    assert not tree.exists() and (outside / "keep").read_text() == "x"
    state.remove_tree(str(tree))  # already gone: fine


# -- run plans -------------------------------------------------------------------------------

@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ARCA_ROOT", str(tmp_path / "root"))
    images = tmp_path / "root" / "images"
    (images / "layers" / "l1").mkdir(parents=True)
    (images / "images.json").write_text("{}")
    return tmp_path / "root"


PROC = {"args": ["/bin/sh"], "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0}}


def _remember(image: str, root: Path, command: list[str] | None = None,
              sigs: list[list[object]] | None = None) -> None:
    deps = runplan.dependencies(image)
    assert deps is not None
    runplan.remember(image, sigs if sigs is not None else runplan.signatures(deps), "name",
                     "sha256:d", [str(root / "images" / "layers" / "l1")], command or [], [],
                     PROC)


def test_plan_hit_and_its_invalidation_by_the_image_db(root: Path) -> None:
    assert runplan.lookup("img", [], []) is None
    _remember("img", root)
    assert runplan.lookup("img", [], []) == ("name", "sha256:d",
                                              [str(root / "images" / "layers" / "l1")], PROC)
    assert runplan.lookup("img", ["other"], []) is None  # another command: not remembered
    assert runplan.lookup("img", [], ["A=1"]) is None
    assert runplan.lookup("other", [], []) is None
    # pull/rm/tag replace images.json (write_atomic): a new inode
    db = root / "images" / "images.json"
    tmp = db.with_name(".new")
    tmp.write_text("{}")
    os.replace(tmp, db)
    assert runplan.lookup("img", [], []) is None


def test_plan_invalidated_by_an_in_place_edit_and_by_code(root: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    _remember("img", root)
    db = root / "images" / "images.json"
    with open(db, "r+") as f:  # same inode, same size
        f.write("[]")
    assert runplan.lookup("img", [], []) is None
    code = root / "code.py"
    code.write_text("x = 1\n")
    monkeypatch.setattr(runplan, "CODE_FILES", (str(code),))
    _remember("img", root)
    assert runplan.lookup("img", [], []) is not None
    code.write_text("x = 2\n")
    assert runplan.lookup("img", [], []) is None


def test_plan_signatures_are_taken_before_the_slow_path(root: Path) -> None:
    deps = runplan.dependencies("img")
    assert deps is not None
    before = runplan.signatures(deps)
    db = root / "images" / "images.json"
    tmp = db.with_name(".new")
    tmp.write_text('{"images": {}}')
    os.replace(tmp, db)  # changed while the slow path ran
    _remember("img", root, sigs=before)
    assert runplan.lookup("img", [], []) is None


def test_plan_of_an_oci_layout_watches_its_files(root: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    layout = tmp_path / "layout"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    for name in ("index.json", "oci-layout", "blobs/sha256/aa", "blobs/sha256/bb"):
        (layout / name).write_text("{}")
    image = f"oci:{layout}:v1"
    _remember(image, root)
    assert runplan.lookup(image, [], []) is not None
    (layout / "blobs" / "sha256" / "bb").write_text("{}")  # rewritten blob: new ctime/mtime
    assert runplan.lookup(image, [], []) is None
    _remember(image, root)
    (layout / "blobs" / "sha256" / "cc").write_text("{}")  # added blob
    assert runplan.lookup(image, [], []) is None
    _remember(image, root)
    (tmp_path / "layout:v1").mkdir()  # `oci:PATH:TAG` now names a directory
    assert runplan.lookup(image, [], []) is None
    # relative references mean something else in another directory
    monkeypatch.chdir(tmp_path)
    _remember("oci:layout:v1", root)
    assert runplan.lookup("oci:layout:v1", [], []) is not None
    monkeypatch.chdir(layout)
    assert runplan.lookup("oci:layout:v1", [], []) is None


def test_plan_depends_on_the_image_store_settings(root: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a layout checks the ARCA_IMAGE_MAX_* limits: other limits, other answer."""
    monkeypatch.delenv("ARCA_IMAGE_MAX_LAYER_BYTES", raising=False)
    _remember("img", root)
    assert runplan.lookup("img", [], []) is not None
    monkeypatch.setenv("ARCA_IMAGE_MAX_LAYER_BYTES", "1K")
    assert runplan.lookup("img", [], []) is None


def test_plan_with_lowerdirs_outside_the_store_is_ignored(root: Path) -> None:
    deps = runplan.dependencies("img")
    assert deps is not None
    for lowers in (["/etc"], [str(root / "images" / "layers" / ".." / "x")], []):
        runplan.remember("img", runplan.signatures(deps), "n", "d", lowers, [], [], PROC)
        assert runplan.lookup("img", [], []) is None


def test_plan_cache_is_bounded(root: Path) -> None:
    for i in range(runplan.MAX_PLANS + 5):
        _remember(f"img{i}", root)
    for i in range(runplan.MAX_PROCS + 5):
        _remember("img0", root, command=[f"c{i}"])
    obj = json.loads(Path(runplan.cache_path()).read_text())
    assert len(obj["plans"]) == runplan.MAX_PLANS
    assert len(obj["plans"]["img0"]["procs"]) == runplan.MAX_PROCS
    assert runplan.lookup("img0", [f"c{runplan.MAX_PROCS + 4}"], []) is not None
    assert runplan.lookup("img0", ["c0"], []) is None


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                       lambda c: st.lists(c, max_size=3) | st.dictionaries(
                           st.sampled_from(["version", "plans", "img", "name", "digest",
                                            "lowerdirs", "deps", "procs", "[[], []]"]),
                           c, max_size=4), max_leaves=12)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["name", "digest", "lowerdirs", "deps", "procs", None]),
       value=JSONISH, whole=st.booleans())
def test_any_cache_content_is_a_miss_or_a_valid_plan(root: Path, key: str | None,
                                                     value: object, whole: bool) -> None:
    """A damaged cache entry (the whole entry, or one field of a valid one) is a miss or a
    plan of the shapes the slow path makes; never an exception."""
    path = Path(runplan.cache_path())
    path.unlink(missing_ok=True)
    _remember("img", root)
    obj = json.loads(path.read_text())
    if whole:
        obj["plans"]["img"] = value
    elif key is not None:
        obj["plans"]["img"][key] = value
    path.write_text(json.dumps(obj))
    got = runplan.lookup("img", [], [])
    if got is not None:  # only the shapes the engine relies on
        name, digest, lowers, proc = got
        assert isinstance(name, str) and isinstance(digest, str) and lowers
        assert all(p.startswith(str(root / "images" / "layers") + "/") for p in lowers)
        assert proc == PROC and key != "deps"
    path.write_bytes(b"\x00garbage")
    assert runplan.lookup("img", [], []) is None


# -- spawn ---------------------------------------------------------------------------------------

def test_spawn_exit_codes_stderr_and_fds(tmp_path: Path) -> None:
    assert spawn.run(["sh", "-c", "exit 3"]) == 3
    assert spawn.run(["sh", "-c", "kill -9 $$"]) == -9
    code, err = spawn.run_capturing_stderr(["sh", "-c", "echo out; echo err >&2; exit 1"])
    assert (code, err) == (1, "err\n")
    # a descriptor our parent left inheritable does not reach the child (close_fds)
    fd = os.open(tmp_path, os.O_RDONLY)
    os.set_inheritable(fd, True)
    try:
        code, err = spawn.run_capturing_stderr(
            [sys.executable, "-c", f"import os, sys; os.fstat({fd})"])
    finally:
        os.close(fd)
    assert code == 1 and "Bad file descriptor" in err
    # SIGPIPE and SIGXFSZ are back to their defaults in the child (Python ignores them)
    _, status = spawn.run_capturing_stderr(["sh", "-c", "cat /proc/self/status >&2"])
    ignored = int(re.findall(r"SigIgn:\s*([0-9a-f]+)", status)[0], 16)
    assert not ignored & (1 << (13 - 1)) and not ignored & (1 << (25 - 1))
    assert spawn.run(["true"], quiet=True) == 0
