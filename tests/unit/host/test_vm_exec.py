"""``exec`` into a ``vm`` container without booting a VM: the runtime has runc start the VMM's
exec client (never the requested process) in the VMM's container, the process reaching runc
in a file of the TD's root-only directory that the step after runc removes; and the guest's
own check refuses an exec before the agent has checked the evidence, and under a measured
policy without ``allow_exec`` (ADR 0040). End to end:
``tests/integration/test_vm_ctr_io.py``, ``test_vm_arca_io.py``."""

from __future__ import annotations

import argparse
import base64
import json
import os
import pathlib
import socket

import pytest

from arca.guest import vminit
from arca.host.backends import get
from arca.host.backends.base import Launch
from arca.host.backends.vm import launch, vmm
from arca.host.runtime import lifecycle
from arca.host.runtime import state as st
from arca.wire.errors import InvalidInput, PolicyDenied, WireFormatError

PROCESS = {"args": ["sh", "-c", "echo hi"], "env": ["PATH=/bin", "A=1"], "cwd": "/srv",
           "user": {"uid": 1000, "gid": 1000}, "terminal": True,
           "consoleSize": {"height": 21, "width": 77}, "capabilities": {"bounding": []}}


def _launch(tmp_path: pathlib.Path) -> Launch:
    return Launch("c1", tmp_path, tmp_path / "td")


def test_a_vm_exec_is_the_vmm_client_carrying_the_process(tmp_path: pathlib.Path) -> None:
    client = get("vm").exec_process(_launch(tmp_path), dict(PROCESS))
    assert client is not None
    assert client["args"][:5] == ["/usr/bin/python3", "-I", "-S", "/arca-vmm/vmm.py", "exec"]
    assert json.loads(client["args"][5]) == PROCESS  # for the guest to check, not run here
    assert (client["env"], client["cwd"], client["user"]) == (
        ["PATH=/usr/bin:/bin"], "/", {"uid": 0, "gid": 0})
    # runc gives the client the exec's terminal (and its size) and the rest of its settings
    for k in ("terminal", "consoleSize", "capabilities"):
        assert client[k] == PROCESS[k]


def test_a_sim_exec_is_the_process_itself(tmp_path: pathlib.Path) -> None:
    assert get("sim").exec_process(_launch(tmp_path), dict(PROCESS)) is None


def test_the_exec_socket_is_in_the_vmms_private_scratch() -> None:
    assert os.path.dirname(vmm.EXEC_SOCKET) == launch.IN_CONTAINER_SCRATCH


def _saved() -> st.ContainerState:
    return st.ContainerState("c1", "vm", "/b", "released", "00")


@pytest.mark.parametrize("form", [["--process", "P"], ["--process=P"], ["-p", "P"],
                                  ["-process", "P"]])
def test_the_runtime_hands_runc_the_replaced_process_in_a_td_file(
        form: list[str], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCA_RUN", str(tmp_path))
    st.td_dir("c1").mkdir(parents=True)
    argv = ["--root", "/r", "exec", "--detach", *form, "--pid-file", "/x.pid", "c1"]
    opts = argparse.Namespace(process="P", id="c1")
    out = lifecycle._with_process(argv, opts, {"args": ["client"]}, _saved())
    (path,) = [a.split("=", 1)[-1] for a in out if a.split("=", 1)[-1].startswith(str(tmp_path))]
    assert len(out) == len(argv) and out[-3:] == argv[-3:]
    assert pathlib.Path(path).parent == st.td_dir("c1")
    assert json.loads(pathlib.Path(path).read_text()) == {"args": ["client"]}
    assert pathlib.Path(path).stat().st_mode & 0o077 == 0  # root-only
    monkeypatch.setattr(lifecycle, "_safe_load", lambda cid, g=None: _saved())
    assert lifecycle._exec_done({}, argv, opts, 3) == lifecycle._exit(3)
    assert not pathlib.Path(path).exists()


def test_an_exec_with_the_command_on_the_line_is_built_as_runc_builds_it(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ``arca-runtime exec [OPTIONS] ID CMD...``: the container's own process (its original
    # config.json) with runc's overrides, handed to runc as a process file like --process
    monkeypatch.setenv("ARCA_RUN", str(tmp_path))
    st.td_dir("c1").mkdir(parents=True)
    st.state_path("c1").parent.mkdir(parents=True, exist_ok=True)
    (st.state_path("c1").parent / lifecycle.ORIGINAL_CONFIG).write_text(json.dumps(
        {"process": {**PROCESS, "args": ["workload"], "terminal": False}}))
    argv = ["--root", "/r", "exec", "-t", "--env", "B=2", "--cwd", "/tmp", "-u", "5:6",
            "--pid-file", "/x.pid", "c1", "sh", "-c", "echo hi"]
    opts = lifecycle.parse_exec(argv[3:])
    process = lifecycle._command_line_process(_saved(), opts)
    assert process["args"] == ["sh", "-c", "echo hi"] and process["terminal"] is True
    assert process["env"] == ["PATH=/bin", "A=1", "B=2"] and process["cwd"] == "/tmp"
    assert process["user"] == {"uid": 5, "gid": 6}
    assert process["capabilities"] == PROCESS["capabilities"]
    out = lifecycle._with_process(argv, opts, {"args": ["client"]}, _saved())
    assert out[:-3] == argv[:-4] and out[-3] == "--process" and out[-1] == "c1"
    assert json.loads(pathlib.Path(out[-2]).read_text()) == {"args": ["client"]}
    monkeypatch.setattr(lifecycle, "_safe_load", lambda cid, g=None: _saved())
    assert lifecycle._exec_done({}, argv, opts, 0) == lifecycle._exit(0)
    assert not pathlib.Path(out[-2]).exists()
    # bad input: one line
    for bad, why in ((["c1"], "no command"), (["-u", "root", "c1", "id"], "UID")):
        with pytest.raises(InvalidInput, match=why):
            lifecycle._command_line_process(_saved(), lifecycle.parse_exec(bad))


def test_vmm_lines_take_partial_and_several_lines() -> None:
    a, b = socket.socketpair()
    try:
        lines = vmm.Lines(b)
        a.sendall(b'{"op": "out", "id": 1}\n{"op": "re')
        assert lines.recv() == [{"op": "out", "id": 1}]
        a.sendall(b'ad", "id": 1}\n')
        assert lines.recv() == [{"op": "read", "id": 1}]
        a.close()
        assert lines.recv() is None
    finally:
        b.close()


# -- the guest's own check (arca.guest.vminit.start_exec) -----------------------------------------

ALLOW = 'version = "0.1.0"\nalgorithm = "sha384"\n\n[data]\npolicy = """\nallow_exec = true\n"""\n'
DENY = 'version = "0.1.0"\nalgorithm = "sha384"\n\n[data]\npolicy = """\nallow_exec = false\n"""\n'


@pytest.fixture
def guest_root(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    monkeypatch.setattr(vminit, "NEW", str(tmp_path))
    spawned: list[object] = []
    monkeypatch.setattr(vminit, "spawn", lambda run, size: spawned.append((run, size)))
    (tmp_path / "run" / "arca").mkdir(parents=True)
    return tmp_path


def _evidence_checked(root: pathlib.Path) -> None:
    (root / "run" / "arca" / "evidence.json").write_text("{}")


def test_guest_refuses_an_exec_before_the_agent_checked_the_evidence(
        guest_root: pathlib.Path) -> None:
    # even under a policy that allows exec: until the agent has checked that the evidence
    # binds it, that init-data is only the host's word
    with pytest.raises(PolicyDenied, match="has not started"):
        vminit.start_exec({"exec": PROCESS}, ALLOW)


@pytest.mark.parametrize("init_data", [None, DENY])
def test_guest_refuses_an_exec_its_measured_policy_does_not_allow(
        guest_root: pathlib.Path, init_data: str | None) -> None:
    _evidence_checked(guest_root)
    with pytest.raises(PolicyDenied, match="does not set allow_exec"):
        vminit.start_exec({"exec": PROCESS}, init_data)


def test_guest_checks_the_exec_process_is_well_formed(guest_root: pathlib.Path) -> None:
    _evidence_checked(guest_root)
    with pytest.raises(WireFormatError, match="args"):
        vminit.start_exec({"exec": {"args": []}}, ALLOW)
    vminit.start_exec({"exec": PROCESS, "terminal": [21, 77]}, ALLOW)  # spawned (not run here)


def test_the_exec_client_relays_binary_stdin_one_chunk_at_a_time_and_exits_with_the_status(
        tmp_path: pathlib.Path) -> None:
    """``vmm.py exec`` against a VMM played by this test (the real one is in the integration
    tests): the request carries the process; stdin goes out in chunks, the next only after a
    ``read``; output is written to fd 1/2 byte for byte; the exit status is the client's."""
    import subprocess
    import sys

    sock_path = tmp_path / "exec.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    server.listen(1)
    data = bytes(range(256)) * 300  # 76,800 bytes: three chunks
    code = (f"import sys; sys.path.insert(0, {str(pathlib.Path(vmm.__file__).parent)!r}); "
            f"import vmm; vmm.EXEC_SOCKET = {str(sock_path)!r}; "
            "sys.exit(vmm.exec_client(sys.argv[1]))")
    (tmp_path / "stdin").write_bytes(data)
    with open(tmp_path / "stdin", "rb") as stdin:
        client = subprocess.Popen([sys.executable, "-I", "-S", "-c", code, json.dumps(PROCESS)],
                                  stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    server.settimeout(30)
    conn = server.accept()[0]
    conn.settimeout(30)
    lines = vmm.Lines(conn)
    got: list[dict[str, object]] = []

    def next_message() -> dict[str, object]:
        while not got:
            msgs = lines.recv()
            assert msgs is not None, "the client hung up"
            got.extend(msgs)
        return got.pop(0)

    assert next_message() == {"exec": PROCESS, "terminal": None}  # no terminal here
    received = b""
    while True:
        msg = next_message()
        assert set(msg) == {"data"} and not got, "one chunk in flight"
        chunk = base64.b64decode(str(msg["data"]))
        if not chunk:
            break
        assert len(chunk) <= vmm.STDIN_CHUNK
        received += chunk
        lines.send({"op": "read", "id": 3})
    assert received == data
    lines.send({"op": "out", "id": 3, "fd": 1, "data": base64.b64encode(data).decode()})
    lines.send({"op": "out", "id": 3, "fd": 2, "data": base64.b64encode(b"err\n").decode()})
    lines.send({"op": "exit", "id": 3, "status": 7})
    out, err = client.communicate(timeout=30)
    conn.close()
    server.close()
    assert (client.returncode, out, err) == (7, data, b"err\n")


class _Host:
    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []

    def send(self, obj: dict[str, object]) -> None:
        self.sent.append(obj)


@pytest.mark.parametrize(("init_data", "evidence", "why"), [
    (ALLOW, False, "has not started"), (DENY, True, "does not set allow_exec"),
    (None, True, "does not set allow_exec")])
def test_guest_lists_its_processes_only_as_its_measured_policy_allows_exec(
        guest_root: pathlib.Path, init_data: str | None, evidence: bool, why: str) -> None:
    # ADR 0057: a listing is what an exec of ps would show; no more for a host without it
    if evidence:
        _evidence_checked(guest_root)
    host = _Host()
    vminit.event(host, {}, {"id": 4, "ps": True}, init_data)  # type: ignore[arg-type]
    (answer,) = host.sent
    assert answer["op"] == "exit" and answer["status"] == 126
    assert "process listing refused in the TD: its" in str(answer["error"])
    assert why in str(answer["error"])


def test_guest_process_listing_is_the_kernels_view_with_the_tds_user_names(
        guest_root: pathlib.Path) -> None:
    _evidence_checked(guest_root)
    (guest_root / "etc").mkdir()
    (guest_root / "etc" / "passwd").write_text(f"tenant:x:{os.getuid()}:0::/:/bin/sh\n")
    host = _Host()
    vminit.event(host, {}, {"id": 4, "ps": True}, ALLOW)  # type: ignore[arg-type]
    out, done = host.sent
    assert (out["op"], out["id"], out["fd"], done) == (
        "out", 4, 1, {"op": "exit", "id": 4, "status": 0})
    listed = {p["pid"]: p for p in json.loads(base64.b64decode(str(out["data"])))}
    me = listed[os.getpid()]  # this test process, as the (here: host's) kernel shows it
    assert me["ppid"] == os.getppid() and me["uid"] == os.getuid() and me["user"] == "tenant"
    assert "pytest" in me["command"] and me["cpu_s"] > 0
    assert 1 not in listed  # PID 1: the TD's runtime, not a workload process
    assert all(p["command"] for p in listed.values())  # no kernel threads
