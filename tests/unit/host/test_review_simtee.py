"""Review: one TD must not starve the sim device of the others (attack tests)."""

from __future__ import annotations

import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from arca.host.simtee import daemon
from arca.wire.errors import InvalidInput

from .test_runtime_simtee import desc, get_report, sim  # noqa: F401 - the fixture


def test_a_td_holding_every_slot_does_not_starve_another_td(sim) -> None:  # noqa: F811
    hog = pathlib.Path(sim.register("hog", desc("/h").to_json(), None)["socket"])
    victim = pathlib.Path(sim.register("victim", desc("/v").to_json(), None)["socket"])
    idle = []
    for _ in range(daemon.MAX_CONCURRENT_REQUESTS + 8):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(hog))
        idle.append(s)
    time.sleep(0.5)  # let the daemon accept them all
    try:
        t = time.monotonic()
        get_report(victim)  # fails (connection closed at once) while the hog holds every slot
        assert time.monotonic() - t < 3
    finally:
        for s in idle:
            s.close()


@pytest.fixture
def open_run(monkeypatch: pytest.MonkeyPatch):
    """A run directory whose parents other users can traverse, as ``/run/arca-host`` is."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="arca-review-"))
    base.chmod(0o755)
    monkeypatch.setenv("ARCA_ROOT", str(base / "root"))
    monkeypatch.setenv("ARCA_RUN", str(base / "run"))
    from arca.host.simtee import client

    client.ensure_running()
    yield client
    client.stop()
    shutil.rmtree(base)


def test_other_host_users_cannot_reach_a_td_device(open_run) -> None:
    # Whoever can talk to a TD's device gets reports with report data of its choosing, i.e.
    # can attest to the KBS as that TD with its own key and receive the TD's secrets.
    sock = open_run.register("victim", desc("/v").to_json(), None)["socket"]
    code = ("import os, socket, sys\n"
            "os.setgid(65534); os.setuid(65534)\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "try:\n"
            f"    s.connect({sock!r})\n"
            "except PermissionError:\n"
            "    sys.exit(0)\n"
            "sys.exit(1)\n")
    assert subprocess.run([sys.executable, "-c", code], timeout=20).returncode == 0


def test_deeply_nested_device_request_is_an_invalid_input() -> None:
    # Within the 4 KiB request limit; a RecursionError killed the handler thread with a
    # traceback in the daemon's log instead of an error answer to the TD.
    with pytest.raises(InvalidInput):
        daemon.parse_device_request(b"[" * 4000)


def test_deeply_nested_control_request_does_not_stop_the_daemon(sim) -> None:  # noqa: F811
    from arca.host.simtee import locations

    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(locations.control_socket()))
    s.sendall(b"[" * 5000 + b"\n")
    answer = s.recv(65536)
    s.close()
    assert b"error" in answer
    assert sim.is_running() and sim.list_tds() == []


def test_a_td_directory_left_open_by_an_older_version_is_closed(monkeypatch) -> None:
    # mkdir(mode=0o700, exist_ok=True) leaves an existing directory's mode alone: a host
    # upgraded from a version that made <run>/td world-traversable must not stay open.
    base = pathlib.Path(tempfile.mkdtemp(prefix="arca-review-"))
    try:
        base.chmod(0o755)
        (base / "run" / "td").mkdir(parents=True)
        (base / "run" / "td").chmod(0o755)
        monkeypatch.setenv("ARCA_ROOT", str(base / "root"))
        monkeypatch.setenv("ARCA_RUN", str(base / "run"))
        from arca.host.simtee import client

        client.ensure_running()
        try:
            client.register("old", desc("/o").to_json(), None)
            assert (base / "run" / "td").stat().st_mode & 0o777 == 0o700
        finally:
            client.stop()
    finally:
        shutil.rmtree(base)
