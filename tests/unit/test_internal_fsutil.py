"""The small os-only helpers of arca._internal: fsutil (write_atomic: whole content or old
content, no temporary left; remove_if_present; secure_state_dirs), procs.pid_alive and
environ (swap_environ/restore_environ)."""

from __future__ import annotations

import os
import pathlib
import stat
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca._internal.fsutil import write_atomic


def test_writes_mode_and_replaces(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "f"
    write_atomic(p, b"one", 0o600)
    assert p.read_bytes() == b"one"
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    write_atomic(str(p), b"two", durable=False)
    assert p.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["f"]


def test_make_parents(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "a" / "b" / "f"
    with pytest.raises(FileNotFoundError):
        write_atomic(p, b"x")
    write_atomic(p, b"x", make_parents=True)
    assert p.read_bytes() == b"x"


def test_failed_rename_keeps_old_content_and_leaves_no_temporary(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "d"
    target.mkdir()
    (target / "keep").write_text("x")  # a non-empty directory cannot be replaced by a file
    with pytest.raises(OSError):
        write_atomic(target, b"new")
    assert sorted(os.listdir(tmp_path)) == ["d"]
    assert (target / "keep").read_text() == "x"


def test_bad_data_leaves_no_temporary(tmp_path: pathlib.Path) -> None:
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "f", "not bytes")  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


def test_concurrent_writers_never_tear(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "f"
    payloads = [bytes([i]) * 200_000 for i in range(8)]
    seen: set[bytes] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add(p.read_bytes())
            except FileNotFoundError:
                pass

    def writer(data: bytes) -> None:
        for _ in range(20):
            write_atomic(p, data, durable=False)

    r = threading.Thread(target=reader)
    r.start()
    ws = [threading.Thread(target=writer, args=(d,)) for d in payloads]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    stop.set()
    r.join()
    assert seen <= set(payloads)
    assert os.listdir(tmp_path) == ["f"]


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=70_000))
def test_round_trip(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = pathlib.Path(d) / "f"
        write_atomic(p, data)
        assert p.read_bytes() == data


def test_secure_state_dirs_tightens_arca_dirs_but_not_a_shared_sticky_one(
        tmp_path: pathlib.Path) -> None:
    from arca._internal.fsutil import secure_state_dirs

    root, run = tmp_path / "root", tmp_path / "run"
    (root / "images").mkdir(parents=True, mode=0o755)
    os.chmod(root, 0o755)  # noqa: S103 - what an older version left
    secure_state_dirs(root, run)
    for d in (root, root / "images", root / "containers", run):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    secure_state_dirs(root, run)  # idempotent
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # noqa: S103 - like /tmp
    secure_state_dirs(shared, run)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert stat.S_IMODE((shared / "images").stat().st_mode) == 0o700


def test_remove_if_present_removes_once_and_tolerates_gone(tmp_path: pathlib.Path) -> None:
    from arca._internal.fsutil import remove_if_present

    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    for _ in range(2):  # the second round finds both gone
        remove_if_present(tmp_path / "f")
        remove_if_present(tmp_path / "d", directory=True)
        assert list(tmp_path.iterdir()) == []
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    with pytest.raises(OSError):  # not empty: a real error, not "already gone"
        remove_if_present(tmp_path / "d", directory=True)


def test_pid_alive() -> None:
    import subprocess

    from arca._internal.procs import pid_alive

    child = subprocess.Popen(["sleep", "30"])
    try:
        assert pid_alive(child.pid) and pid_alive(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid)
    assert not pid_alive(0) and not pid_alive(-1)  # a group, not a process


def test_swap_environ_and_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from arca._internal.environ import restore_environ, swap_environ

    monkeypatch.setenv("ARCA_T_SET", "before")
    monkeypatch.delenv("ARCA_T_UNSET", raising=False)
    monkeypatch.setenv("ARCA_T_DROPPED", "x")
    keys = ("ARCA_T_SET", "ARCA_T_UNSET", "ARCA_T_DROPPED")
    saved = swap_environ(keys, {"ARCA_T_SET": "during", "ARCA_T_UNSET": "new"})
    assert [os.environ.get(k) for k in keys] == ["during", "new", None]
    restore_environ(saved)
    assert [os.environ.get(k) for k in keys] == ["before", None, "x"]
