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


def test_an_exec_without_a_process_file_is_refused_for_vm() -> None:
    with pytest.raises(InvalidInput, match="needs --process"):
        lifecycle._with_process(["exec", "c1", "sh"], argparse.Namespace(process=None),
                                {"args": ["client"]}, _saved())


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
