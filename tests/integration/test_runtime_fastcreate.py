"""``create`` of a TEE container handed by the C front end to the running sim daemon
(``arca.host.runtime.fastcreate``, ADR 0003): really taken (``runc create``'s parent is the
front end, not Python), errors one line, runc failures undone, ``kill -9`` safe, the request's
environment used, other sources or odd requests refused."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from arca.host.runtime.fastcreate import ENV_KEYS, code_stamp
from tests.integration.test_runtime_lifecycle import (
    NEEDS_ROOT_AND_RUNC,
    RUN,
    Runtime,
    assert_clean,
    kill_create_then_force_delete,
    leftovers,
    sim_runtime,
)

pytestmark = [pytest.mark.integration, NEEDS_ROOT_AND_RUNC]

RUNTIME = pathlib.Path(sys.executable).parent / "arca-runtime"


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory):
    # runc through a wrapper that records who ran runc's create — `create`, or `run --detach`
    # for a TEE container (create + prestart) — and can be told to fail or dawdle there.
    with sim_runtime(tmp_path_factory, "fc", runc_hook=lambda tmp: (
            'for a in "$@"; do case "$a" in create|--detach)\n'
            f'  readlink /proc/$PPID/exe >> {tmp / "parents"}\n'
            '  [ -n "$FAIL_CREATE" ] && exit 7\n'
            '  [ -n "$SLOW_CREATE" ] && sleep "$SLOW_CREATE";;\n'
            "esac; done\n")) as runtime:
        runtime.parents = runtime.tmp / "parents"  # type: ignore[attr-defined]
        yield runtime


def _last_parent(rt: Runtime) -> str:
    lines = rt.parents.read_text().splitlines()  # type: ignore[attr-defined]
    return lines[-1]


def _state(cid: str) -> dict[str, str]:
    p = pathlib.Path(os.environ["ARCA_RUN"]) / "containers" / cid / "state.json"
    return dict(json.loads(p.read_text()))


def test_create_with_the_daemon_up_starts_no_python(rt: Runtime) -> None:
    from arca.host.simtee import client

    cid = f"fc-ok-{RUN}"
    b = rt.bundle(cid, ["true"])
    original = (b / "config.json").read_text()
    rt.run("create", "--bundle", str(b), cid)
    assert _last_parent(rt) == str(RUNTIME.resolve())  # runc's parent: the C front end
    state = _state(cid)
    assert state["status"] == "created" and state["tee"] == "sim"
    assert len(state["measurement"]) == 96
    assert [t for t in client.list_tds() if t["td_id"] == cid]
    assert "io.arca" in (b / "config.json").read_text() and (b / "config.json").read_text() \
        != original
    rt.run("delete", "--force", cid)
    assert_clean(rt, cid)


def test_without_a_daemon_create_takes_the_python_path(rt: Runtime) -> None:
    from arca.host.simtee import client

    client.stop()
    cid = f"fc-py-{RUN}"
    b = rt.bundle(cid, ["true"])
    rt.run("create", "--bundle", str(b), cid)
    assert "python" in _last_parent(rt)
    assert _state(cid)["status"] == "created"
    assert client.is_running()  # started by the Python path, for the next create
    rt.run("delete", "--force", cid)
    assert_clean(rt, cid)


def test_refusal_through_the_daemon_is_one_line(rt: Runtime) -> None:
    cid = f"fc-err-{RUN}"
    b = rt.bundle(cid, ["true"], tee='bö"gus')
    before = rt.log.read_text() if rt.log.exists() else ""
    res = rt.run("create", "--bundle", str(b), cid, check=False)
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("arca-runtime: error: ")
    assert "unknown TEE 'bö\"gus'" in res.stderr
    new = rt.log.read_text()[len(before):].splitlines()
    assert len(new) == 1
    entry = json.loads(new[0])
    assert entry["level"] == "error" and "unknown TEE 'bö\"gus'" in entry["msg"]
    assert res.stderr == f"arca-runtime: error: {entry['msg']}\n"
    assert not (pathlib.Path(os.environ["ARCA_RUN"]) / "containers" / cid).exists()


def test_odd_bundle_paths_relative_to_cwd_and_the_callers_umask(rt: Runtime) -> None:
    """The request carries argv and cwd verbatim (JSON-escaped by the front end)."""
    from arca.host.simtee import client

    client.ensure_running()
    cid = f"fc-odd-{RUN}"
    b = rt.bundle(cid, ["true"])
    odd = b.parent / 'we"ird \\ dir\tö'
    b.rename(odd)
    with open(rt.tmp / "stdout", "w") as o, open(rt.tmp / "stderr", "w") as e:
        res = subprocess.run(["sh", "-c", 'umask 077 && exec "$@"', "sh",
                              *rt.argv("create", "--bundle", odd.name, cid)],
                             cwd=odd.parent, stdout=o, stderr=e, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, (rt.tmp / "stderr").read_text()
    assert _last_parent(rt) == str(RUNTIME.resolve())
    assert _state(cid)["bundle"] == str(odd)
    td = pathlib.Path(os.environ["ARCA_RUN"]) / "td" / cid
    assert (td / "descriptor.json").stat().st_mode & 0o777 == 0o600  # 0644 under umask 077
    rt.run("delete", "--force", cid)
    assert_clean(rt, cid)


def test_runc_create_failure_is_undone(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    from arca.host.simtee import client

    client.ensure_running()
    cid = f"fc-fail-{RUN}"
    b = rt.bundle(cid, ["true"])
    original = (b / "config.json").read_text()
    monkeypatch.setenv("FAIL_CREATE", "1")
    res = rt.run("create", "--bundle", str(b), cid, check=False)
    assert res.returncode == 7  # runc's status
    assert _last_parent(rt) == str(RUNTIME.resolve())
    assert (b / "config.json").read_text() == original
    assert_clean(rt, cid)


def test_the_requests_environment_is_used(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon was started without ARCA_TEE; the caller's default TEE decides."""
    from arca.host.simtee import client

    client.ensure_running()
    cid = f"fc-env-{RUN}"
    b = rt.bundle(cid, ["true"], tee=None)
    monkeypatch.setenv("ARCA_TEE", "sim")
    rt.run("create", "--bundle", str(b), cid)
    assert _last_parent(rt) == str(RUNTIME.resolve())
    assert _state(cid)["tee"] == "sim"
    rt.run("delete", "--force", cid)
    assert_clean(rt, cid)


@pytest.mark.parametrize("delay", [0.0, 0.002, 0.005, 0.01, 0.03, 0.1])
def test_kill_9_of_the_front_end_then_delete_force_leaves_nothing(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch, delay: float) -> None:
    from arca.host.simtee import client

    client.ensure_running()
    monkeypatch.setenv("SLOW_CREATE", "0.05")
    kill_create_then_force_delete(rt, f"fc-k9-{int(delay * 1000)}-{RUN}", delay)


def test_a_create_whose_front_end_died_before_the_answer_is_undone(rt: Runtime) -> None:
    """The daemon finishes a create whose caller was killed while it worked (so a `delete
    --force` may already have run): it cannot deliver the answer, so it undoes the create."""
    import socket

    from arca.host.simtee import client, locations

    client.ensure_running()
    cid = f"fc-gone-{RUN}"
    b = rt.bundle(cid, ["true"])
    req = {"op": "create", "stamp": code_stamp(),
           "argv": rt.argv("create", "--bundle", str(b), cid)[1:], "cwd": "/", "umask": 0o22,
           "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ}}
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(locations.control_socket()))
    s.sendall(json.dumps(req).encode() + b"\n")
    s.close()  # gone before the answer, as after kill -9
    assert_clean(rt, cid)
    # The same request from a caller that stays creates the container's Arca state.
    answer = client.request(req)
    assert answer["do"] == "spawn" and answer["then"] == "create-done", answer
    assert leftovers(rt, cid)["state"] == [cid]
    rt.run("delete", "--force", cid)
    assert_clean(rt, cid)


def test_other_sources_or_odd_requests_fall_back(rt: Runtime) -> None:
    from arca.host.simtee import client

    client.ensure_running()
    base = {"op": "create", "stamp": code_stamp(), "argv": ["create", "x"], "cwd": "/",
            "umask": 0o22, "env": {"ARCA_RUN": os.environ["ARCA_RUN"]}}
    for change in ({"stamp": "0" * 64}, {"cwd": "relative"}, {"env": {"ARCA_RUN": "/elsewhere"}},
                   {"env": {"ARCA_RUN": os.environ["ARCA_RUN"], "ARCA_ROOT": "rel"}},
                   {"env": {"ARCA_RUN": os.environ["ARCA_RUN"], "PATH": "/bin"}},
                   {"argv": ["run", "x"]}, {"argv": "create x"}, {"umask": "022"},
                   {"umask": 0o1000}):
        answer = client.request({**base, **change})
        assert answer["do"] == "python" and set(answer) == {"do", "why"}, change
    # A well-formed request for a bundle that is not there: refused, in one line.
    answer = client.request({**base, "argv": ["create", "--bundle", "/nonexistent", "x"]})
    assert answer["do"] == "error" and "\n" not in answer["msg"]


def test_the_whole_lifecycle_with_the_daemon_up_starts_no_python(
        rt: Runtime, tmp_path: pathlib.Path) -> None:
    """create, state, start, state and delete of a TEE container through a front end that
    cannot start Python: with the daemon up every step is handed to it (ADR 0046), and the
    front end only carries out its answers."""
    import time

    from arca.host.simtee import client

    client.ensure_running()
    fe = tmp_path / "arca-runtime"
    subprocess.run(["gcc", "-O2", '-DARCA_PYTHON="/nonexistent/py"', '-DARCA_SRC="/x"',
                    '-DARCA_SITE="/x"', f'-DARCA_STAMP="{code_stamp()}"', "-o", str(fe),
                    str(pathlib.Path(__file__).resolve().parents[2]
                        / "src/arca/host/runtime/frontend.c")], check=True)
    cid = f"fc-nopy-{RUN}"
    b = rt.bundle(cid, ["sh", "-c", "echo hello-from-the-td"])
    out = tmp_path / "out"

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        err = tmp_path / "err"
        with open(out, "a") as o, open(err, "w") as e:  # files: the container inherits them
            proc = subprocess.run([str(fe), *rt.argv(*args)[1:]], stdout=o, stderr=e,
                                  stdin=subprocess.DEVNULL, timeout=60)
        res = subprocess.CompletedProcess(proc.args, proc.returncode, "", err.read_text())
        assert "cannot execute /nonexistent/py" not in res.stderr, (args, res.stderr)
        return res

    def state() -> str:
        res = subprocess.run([str(fe), *rt.argv("state", cid)[1:]], capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return str(json.loads(res.stdout)["status"])

    assert call("create", "--bundle", str(b), cid).returncode == 0
    assert _last_parent(rt) == str(fe)  # runc's run --detach: the front end's child
    assert _state(cid)["status"] == "created" and state() == "created"
    assert call("start", cid).returncode == 0
    deadline = time.monotonic() + 30
    while "hello-from-the-td" not in out.read_text():
        assert time.monotonic() < deadline, out.read_text()
        time.sleep(0.05)
    assert call("start", cid).returncode != 0  # runc's own refusal of a second start
    while state() != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    res = call("delete", cid)
    assert res.returncode == 0, res.stderr
    assert_clean(rt, cid)
