"""The host lifecycle state machine (``arca.host.runtime.machine``): states derived from the
files, allowed transitions, and one clear error for a call in the wrong state."""

from __future__ import annotations

import os
import pathlib

import pytest

from arca.errors import StateError
from arca.host.runtime import machine as sm
from arca.host.runtime import state as st


@pytest.fixture(autouse=True)
def run_dir(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    monkeypatch.setenv("ARCA_RUN", str(tmp_path / "run"))
    return tmp_path / "run"


def _make(cid: str, status: str, *, go: bool = False, released: bool = False) -> None:
    st.save(st.ContainerState(cid, "sim", "/b", status))
    st.td_dir(cid).mkdir(parents=True)
    if go:
        os.mkfifo(st.go_path(cid), 0o600)
    if released:
        st.released_path(cid).touch()


@pytest.mark.parametrize(("status", "go", "released", "want"), [
    ("creating", False, False, sm.CREATING),
    ("creating", True, False, sm.CREATING),
    ("created", True, False, sm.CREATED),
    ("created", True, True, sm.RELEASED),
    ("created", False, False, sm.RELEASED),  # not prestarted: runc's own start
])
def test_state_comes_from_the_files(status: str, go: bool, released: bool, want: str) -> None:
    _make("c1", status, go=go, released=released)
    assert sm.current("c1") == want


def test_absent_and_corrupt() -> None:
    assert sm.current("nothing") == sm.ABSENT
    _make("c2", "running")
    with pytest.raises(StateError, match="corrupt"):
        sm.current("c2")


@pytest.mark.parametrize(("state", "command", "after"), [
    (sm.ABSENT, "create", sm.CREATING), (sm.CREATING, "created", sm.CREATED),
    (sm.CREATING, "undo", sm.ABSENT), (sm.CREATED, "start", sm.RELEASED),
    (sm.CREATED, "delete", sm.ABSENT), (sm.RELEASED, "delete", sm.ABSENT),
    (sm.CREATING, "delete", sm.ABSENT),
])
def test_allowed_transitions(state: str, command: str, after: str) -> None:
    assert sm.require("c1", state, command) == after


@pytest.mark.parametrize(("state", "command", "message"), [
    (sm.CREATING, "start", "cannot start container c1: its create has not completed"),
    (sm.CREATING, "exec", "cannot exec container c1: its create has not completed"),
    (sm.CREATED, "create", "cannot create container c1: it is created"),
    (sm.RELEASED, "start", "cannot start container c1: it is released"),
    (sm.ABSENT, "start", "cannot start container c1: it is absent"),
])
def test_a_call_in_the_wrong_state_is_one_clear_error(state: str, command: str,
                                                     message: str) -> None:
    with pytest.raises(StateError) as e:
        sm.require("c1", state, command)
    assert str(e.value) == message


def test_start_of_a_half_created_container_is_refused_by_the_runtime(
        run_dir: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Through ``arca-runtime start`` (the Python path): the machine's error, one line."""
    from arca.host.runtime.cli import main

    _make("c3", "creating")
    assert main(["--root", str(run_dir / "runc"), "start", "c3"]) == 1
    assert capsys.readouterr().err == ("arca-runtime: error: cannot start container c3: its "
                                       "create has not completed\n")
