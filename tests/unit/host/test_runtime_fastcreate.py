"""``arca.host.runtime.fastcreate``: the daemon side of the front end's create request.

Requests come from root over the control socket, but are still parsed defensively: whatever
arrives, the answer is a dict (fallback, or a one-line error), the daemon's environment and
umask are left as they were, and the code stamp is the one ``scripts/setup.sh`` compiles in.
"""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as s

from arca.host.runtime import fastcreate

REPO = pathlib.Path(__file__).resolve().parents[3]


def test_code_stamp_is_what_setup_compiles_in() -> None:
    script = (REPO / "scripts/setup.sh").read_text()
    line = next(ln for ln in script.splitlines() if ln.startswith("code_stamp=$("))
    cont = script.split(line, 1)[1].split("\n", 2)[1]  # the command's second line
    cmd = line.removeprefix("code_stamp=").rstrip("\\") + cont
    shell = subprocess.run(["bash", "-c", f"echo {cmd}"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.strip()
    assert shell == fastcreate.code_stamp()
    assert len(shell) == 64


_text = s.text(max_size=20)
_json = s.recursive(s.none() | s.booleans() | s.integers() | _text,
                    lambda c: s.lists(c, max_size=4) | s.dictionaries(_text, c, max_size=4),
                    max_leaves=10)


@pytest.fixture()
def run_dir(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    monkeypatch.setenv("ARCA_RUN", str(tmp_path / "run"))
    monkeypatch.setenv("ARCA_ROOT", str(tmp_path / "root"))
    return tmp_path


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stamp_ok=s.booleans(), argv=s.lists(_text, max_size=5) | _json
       | s.lists(_text, max_size=4).map(lambda rest: ["create", *rest])
       | s.lists(_text, max_size=2).map(lambda rest: ["create", "--bundle", *rest]),
       cwd=s.sampled_from(["/", "/nonexistent", "rel"]) | _json,
       env=s.dictionaries(s.sampled_from([*fastcreate.ENV_KEYS, "PATH"]), _text, max_size=3)
       | _json, umask=s.integers(-1, 0o1000) | _json, same_run=s.booleans())
def test_any_request_gets_an_answer_and_leaves_the_daemon_as_it_was(
        run_dir: pathlib.Path, stamp_ok: bool, argv: object, cwd: object, env: object,
        umask: object, same_run: bool) -> None:
    stamp = fastcreate.code_stamp()
    if same_run and isinstance(env, dict):
        env = {**env, "ARCA_RUN": os.environ["ARCA_RUN"]}
    req = {"op": "create", "stamp": stamp if stamp_ok else "x", "argv": argv, "cwd": cwd,
           "env": env, "umask": umask}
    before, mask = dict(os.environ), os.umask(0o22)
    answer = fastcreate.handle(req, object(), stamp)
    assert dict(os.environ) == before and os.umask(mask) == 0o22
    assert isinstance(answer, dict)
    if answer["do"] == "error":
        assert set(answer) == {"do", "msg"} and "\n" not in answer["msg"]
    else:
        assert set(answer) == {"do", "why"} and answer["do"] == "python"
    assert not (run_dir / "run" / "containers").exists() or not any(
        (run_dir / "run" / "containers").iterdir())


class _Daemon:
    """Records what the daemon is asked to do (the backend's undo goes through it)."""

    def __init__(self) -> None:
        self.unregistered: list[str] = []

    def unregister(self, td_id: str) -> bool:
        self.unregistered.append(td_id)
        return True


@pytest.mark.parametrize("status", ["created", "creating"])
def test_delete_is_two_steps_in_the_daemon(run_dir: pathlib.Path, status: str) -> None:
    """The front end's delete: the daemon says which runc delete to run, then (runc's status
    back) runs the backend's undo and removes Arca's files (lifecycle.step there)."""
    from arca.host.runtime import state as st

    st.save(st.ContainerState("c1", "sim", "/b", status, "ab"))
    st.td_dir("c1").mkdir(parents=True)
    daemon = _Daemon()
    req = {"op": "delete", "stamp": fastcreate.code_stamp(), "argv": ["delete", "c1"],
           "cwd": "/", "env": {"ARCA_RUN": os.environ["ARCA_RUN"]}, "umask": 0o22}
    answer = fastcreate.handle(req, daemon, fastcreate.code_stamp())
    assert answer == {"do": "spawn", "args": ["delete", "c1"], "then": "delete-done"}
    assert st.load("c1") is not None and daemon.unregistered == []
    answer = fastcreate.handle({**req, "op": "delete-done", "rc": 0}, daemon,
                               fastcreate.code_stamp())
    assert answer == {"do": "exit", "rc": 0, "stdout": "", "stderr": ""}
    assert daemon.unregistered == ["c1"] and st.load("c1") is None
    assert not st.td_dir("c1").exists()
    assert fastcreate.handle({**req, "op": "create-done"}, daemon, fastcreate.code_stamp()
                             )["do"] == "python"
    assert fastcreate.handle({**req, "op": "bogus"}, daemon, fastcreate.code_stamp()
                             )["do"] == "python"
