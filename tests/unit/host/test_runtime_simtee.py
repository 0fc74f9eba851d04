"""The sim platform daemon as a real process: registration, device protocol, isolation, restart."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.verifier.base import Expected
from arca.verifier.sim import SimVerifier
from arca.wire.errors import InvalidInput
from tests.support.simtee import desc, running_sim

RD = bytes(range(64))
INIT = b'version = "0.1.0"\nalgorithm = "sha512"\n'


@pytest.fixture
def sim(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
    yield from running_sim(tmp_path, monkeypatch)


def ask(path: pathlib.Path, payload: bytes) -> dict:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(path))
    s.sendall(payload)
    buf = b""
    while chunk := s.recv(65536):
        buf += chunk
    s.close()
    return json.loads(buf)


def get_report(path: pathlib.Path, rd: bytes = RD) -> bytes:
    resp = ask(path, json.dumps({"report_data": rd.hex()}).encode() + b"\n")
    assert "evidence" in resp, resp
    return base64.b64decode(resp["evidence"])


def verifier() -> SimVerifier:
    from arca.host.simtee.locations import root_cert_path

    return SimVerifier([root_cert_path().read_bytes()])


def test_register_report_verify_unregister(sim) -> None:
    from arca.host.simtee import locations

    resp = sim.register("c1", desc("/a").to_json(), INIT)
    sock = pathlib.Path(resp["socket"])
    assert sock == locations.device_socket("c1") and sock.is_socket()
    assert resp["measurement"] == desc("/a").measurement().hex()
    import hashlib

    init_hash = hashlib.sha512(INIT).digest()[:48]
    claims = verifier().verify(get_report(sock), expected=Expected(RD, init_hash))
    assert claims.values["td_id"] == "c1"
    assert claims.values["measurement"] == desc("/a").measurement().hex()
    assert sim.list_tds() == [{"td_id": "c1", "measurement": desc("/a").measurement().hex()}]
    sim.unregister("c1")
    assert not sock.exists() and sim.list_tds() == []
    assert not (locations.registrations_dir() / "c1.json").exists()


def test_each_socket_reports_only_its_own_td(sim) -> None:
    a = pathlib.Path(sim.register("ta", desc("/a").to_json(), None)["socket"])
    b = pathlib.Path(sim.register("tb", desc("/b").to_json(), None)["socket"])
    ca = verifier().verify(get_report(a), expected=Expected(RD, bytes(48)))
    cb = verifier().verify(get_report(b))
    assert (ca.values["td_id"], cb.values["td_id"]) == ("ta", "tb")
    assert ca.values["measurement"] != cb.values["measurement"]
    # A request cannot name another TD: unknown fields are refused outright.
    resp = ask(b, json.dumps({"report_data": RD.hex(), "td_id": "ta"}).encode() + b"\n")
    assert "error" in resp


def test_duplicate_and_bad_registrations_are_refused(sim) -> None:
    from arca.host.simtee.client import PlatformRefused

    sim.register("dup", desc("/a").to_json(), None)
    with pytest.raises(PlatformRefused, match="already registered"):
        sim.register("dup", desc("/b").to_json(), None)
    with pytest.raises(PlatformRefused, match="invalid container id"):
        sim.register("../etc", desc("/a").to_json(), None)
    with pytest.raises(PlatformRefused, match="init-data"):
        sim.register("badinit", desc("/a").to_json(), b"not = [toml")
    with pytest.raises(PlatformRefused, match="launch descriptor"):
        sim.register("baddesc", {"version": 1}, None)


@pytest.mark.parametrize("payload", [
    b"\n", b"{}\n", b"[]\n", b'{"report_data": "00"}\n',
    json.dumps({"report_data": "AA" * 64}).encode() + b"\n",
    b"x" * 10000,
])
def test_bad_device_requests_get_an_error(sim, payload: bytes) -> None:
    sock = pathlib.Path(sim.register("bad", desc("/a").to_json(), None)["socket"])
    assert "error" in ask(sock, payload)
    assert "evidence" in ask(sock, json.dumps({"report_data": RD.hex()}).encode() + b"\n")


def test_restart_keeps_registrations_and_only_one_daemon_runs(sim) -> None:
    sock = pathlib.Path(sim.register("keep", desc("/k").to_json(), None)["socket"])
    pid = sim.read_pid()
    # A second daemon exits at once: the first holds the lock.
    res = subprocess.run([sys.executable, "-m", "arca.host.simtee", "serve"],
                         capture_output=True, text=True, timeout=20)
    assert res.returncode == 0 and "already runs" in res.stderr
    assert sim.read_pid() == pid
    sim.stop()
    assert not sock.exists()
    sim.ensure_running()
    assert sim.read_pid() != pid
    assert verifier().verify(get_report(sock)).values["td_id"] == "keep"


def test_unregister_without_daemon_drops_the_record(sim) -> None:
    from arca.host.simtee import locations

    sim.register("gone", desc("/g").to_json(), None)
    sim.stop()
    sim.unregister("gone")
    assert not (locations.registrations_dir() / "gone.json").exists()
    sim.ensure_running()
    assert sim.list_tds() == []


def test_control_socket_is_root_only(sim) -> None:
    from arca.host.simtee import locations

    assert os.stat(locations.control_socket()).st_mode & 0o777 == 0o600
    code = (
        "import os, socket, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({str(locations.control_socket())!r})\n"
        "except PermissionError:\n"
        "    sys.exit(0)\n"
        "sys.exit(1)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=20).returncode == 0


def test_slow_client_does_not_block_others(sim) -> None:
    sock = pathlib.Path(sim.register("slow", desc("/s").to_json(), None)["socket"])
    idle = [socket.socket(socket.AF_UNIX) for _ in range(8)]
    for s in idle:
        s.connect(str(sock))
    t = time.monotonic()
    get_report(sock)
    assert time.monotonic() - t < 3
    for s in idle:
        s.close()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_device_request_parser(line: bytes) -> None:
    from arca.host.simtee.daemon import parse_device_request

    try:
        rd = parse_device_request(line)
    except InvalidInput:
        return
    assert len(rd) == 64 and json.loads(line) == {"report_data": rd.hex()}


def test_idle_daemon_exits_and_comes_back_on_demand(sim, monkeypatch) -> None:
    sim.stop()
    monkeypatch.setenv("ARCA_SIMTEE_IDLE_EXIT", "0.5")
    sim.ensure_running()
    sock = pathlib.Path(sim.register("busy", desc("/b").to_json(), None)["socket"])
    time.sleep(1.5)
    assert sim.is_running()  # a registered TD keeps it alive
    sim.unregister("busy")
    # Watch the pid file, not ping: a control request counts as activity.
    deadline = time.monotonic() + 10
    while sim.read_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sim.read_pid() is None and not sim.is_running()
    # The next registration starts it again.
    sock = pathlib.Path(sim.register("again", desc("/a").to_json(), None)["socket"])
    assert verifier().verify(get_report(sock)).values["td_id"] == "again"


def test_long_container_ids_still_get_a_device_socket(sim) -> None:
    from arca.host.simtee import locations

    td = "k" * 64 + "-" + "8" * 63  # 128 chars: the longest id; path far over sun_path
    resp = sim.register(td, desc("/l").to_json(), None)
    assert len(resp["socket"]) > 108 and locations.device_socket(td).is_socket()
    # Connect the way a TD does, through a short path to the bind-mounted directory.
    dfd = os.open(locations.device_dir(td), os.O_PATH)
    try:
        ev = get_report(pathlib.Path(f"/proc/self/fd/{dfd}/sim.sock"))
    finally:
        os.close(dfd)
    assert verifier().verify(ev).values["td_id"] == td
