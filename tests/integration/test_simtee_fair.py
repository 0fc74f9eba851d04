"""Attacks on the sim platform daemon's fairness (``arca.host.simtee.daemon``), against the
real daemon process: compromised TDs holding every connection they can get, and a create
that takes long, must not keep an honest TD from its report."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import re
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from arca.host.simtee import daemon
from arca.verifier.base import Expected
from arca.verifier.sim import SimVerifier
from tests.support.simtee import desc, running_sim

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="the sim daemon's control is root-only")]

HOSTILE = 8
#: What "served at once" means here; without the fixes these waits are seconds or forever.
BOUND_S = 1.0


@pytest.fixture
def sim(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    yield from running_sim(tmp_path, monkeypatch)


def _verifier() -> SimVerifier:
    from arca.host.simtee.locations import root_cert_path

    return SimVerifier([root_cert_path().read_bytes()])


def _connect(path: str, timeout: float = 5.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(path)
    return s


def _answer(s: socket.socket) -> dict[str, str]:
    buf = b""
    while chunk := s.recv(65536):
        buf += chunk
    s.close()
    return dict(json.loads(buf))


def _reports(sock: str, td_id: str, measurement: str, n: int) -> float:
    """Ask for ``n`` reports at once over ``n`` connections; verify each; the time taken."""
    t = time.monotonic()
    conns = [_connect(sock, BOUND_S) for _ in range(n)]
    rds = [os.urandom(64) for _ in range(n)]
    for s, rd in zip(conns, rds, strict=True):
        s.sendall(json.dumps({"report_data": rd.hex()}).encode() + b"\n")
    answers = [_answer(s) for s in conns]
    took = time.monotonic() - t
    for rd, answer in zip(rds, answers, strict=True):
        assert "evidence" in answer, answer
        claims = _verifier().verify(base64.b64decode(answer["evidence"]),
                                    expected=Expected(rd, bytes(48)))
        assert claims.values["td_id"] == td_id
        assert claims.values["measurement"] == measurement
    return took


class Hog(threading.Thread):
    """Compromised TDs: each keeps as many idle connections open as the daemon accepts and
    replaces every one the daemon closes, as fast as it can."""

    def __init__(self, socks: list[str], per_td: int) -> None:
        super().__init__(daemon=True)
        self.socks, self.per_td = socks, per_td
        self.stop = threading.Event()
        self.closed = 0  # connections the daemon closed (refused, or idle too long)
        self.open: dict[str, set[socket.socket]] = {p: set() for p in socks}

    def alive(self) -> int:
        return sum(len(v) for v in self.open.values())

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            while not self.stop.is_set():
                for path, conns in self.open.items():
                    while len(conns) < self.per_td:
                        s = socket.socket(socket.AF_UNIX)
                        s.setblocking(False)
                        try:
                            s.connect(path)
                        except BlockingIOError:  # its backlog is full: try again later
                            s.close()
                            break
                        conns.add(s)
                        sel.register(s, selectors.EVENT_READ, path)
                for key, _ in sel.select(timeout=0.005):
                    s = key.fileobj
                    assert isinstance(s, socket.socket)
                    sel.unregister(s)
                    self.open[key.data].discard(s)
                    s.close()
                    self.closed += 1
        finally:
            for conns in self.open.values():
                for s in conns:
                    s.close()
            sel.close()


def test_compromised_tds_holding_every_connection_do_not_starve_an_honest_td(sim) -> None:
    from arca.host.simtee import locations

    hostile = [sim.register(f"hostile{i}", desc(f"/h{i}").to_json(), None)["socket"]
               for i in range(HOSTILE)]
    honest = sim.register("honest", desc("/ok").to_json(), None)
    # Each hostile TD tries for more than the per-TD cap; together far more than the pool.
    hog = Hog(hostile, daemon.MAX_REQUESTS_PER_TD + 4)
    hog.start()
    try:
        # The attack is real: they hold the whole shared pool plus their reserved slots ...
        held = daemon.MAX_CONCURRENT_REQUESTS + HOSTILE * daemon.RESERVED_REQUESTS_PER_TD
        deadline = time.monotonic() + 5
        while hog.alive() < held or hog.closed < 50:
            assert time.monotonic() < deadline, (hog.alive(), hog.closed)
            time.sleep(0.01)
        # ... and the honest TD still gets its agent's and arca-evidence's reports at once,
        # again and again while the hostile TDs churn through the daemon's read deadline.
        end = time.monotonic() + daemon.REQUEST_LINE_TIMEOUT_S + 0.5
        rounds = 0
        while time.monotonic() < end or rounds < 3:
            took = _reports(honest["socket"], "honest", desc("/ok").measurement().hex(),
                            daemon.RESERVED_REQUESTS_PER_TD)
            assert took < BOUND_S, f"honest reports took {took:.2f}s under attack"
            rounds += 1
        # Still under attack at the end (give the hog a moment to replace what just expired).
        deadline = time.monotonic() + 2
        while hog.alive() < held:
            assert time.monotonic() < deadline, hog.alive()
            time.sleep(0.01)
    finally:
        hog.stop.set()
        hog.join(10)
    # Hundreds of refusals, a handful of log lines: once per TD per burst.
    assert hog.closed > 100
    logged = locations.log_file().read_text()
    for i in range(HOSTILE):
        bursts = len(re.findall(rf"TD hostile{i} has \d+ device connections open", logged))
        assert 1 <= bursts <= 6, (i, bursts)
    assert "TD honest has" not in logged


def _fifo_create(tmp: pathlib.Path) -> tuple[socket.socket, int]:
    """A real ``create`` for the C front end, stuck reading a ``config.json`` that is a FIFO
    until the test writes it: a create that takes as long as the test wants."""
    from arca.host.runtime.fastcreate import code_stamp
    from arca.host.simtee import locations

    bundle = tmp / "bundle"
    bundle.mkdir()
    fifo = bundle / "config.json"
    os.mkfifo(fifo)
    req = {"op": "create", "stamp": code_stamp(), "argv": ["create", "--bundle", str(bundle),
                                                           "slow"],
           "cwd": "/", "umask": 0o22,
           "env": {k: os.environ[k] for k in ("ARCA_ROOT", "ARCA_RUN")}}
    ctl = _connect(str(locations.control_socket()), 20)
    ctl.sendall(json.dumps(req).encode() + b"\n")
    # The daemon is inside the create once it has the FIFO open for reading; it then reads
    # until the test writes and closes its end.
    deadline = time.monotonic() + 10
    while True:
        try:
            return ctl, os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            assert time.monotonic() < deadline, "the daemon never started the create"
            time.sleep(0.01)


def test_a_device_request_is_answered_while_a_create_is_in_flight(sim, tmp_path) -> None:
    td = sim.register("running", desc("/r").to_json(), None)
    ctl, fifo = _fifo_create(tmp_path)
    try:
        # The create is still being served (no answer yet) ...
        ctl.settimeout(0.05)
        with pytest.raises(TimeoutError):
            ctl.recv(1)
        # ... and the running TD's reports come at once, twice over.
        took = _reports(td["socket"], "running", desc("/r").measurement().hex(), 2)
        assert took < BOUND_S
        ctl.settimeout(0.05)
        with pytest.raises(TimeoutError):
            ctl.recv(1)
    finally:
        os.write(fifo, b"not json")  # the create goes on, and fails on what it read
        os.close(fifo)
    ctl.settimeout(20)
    answer = _answer(ctl)
    assert answer["do"] == "error" and "malformed config.json" in answer["msg"], answer
    assert sim.is_running()


def test_a_control_client_that_says_nothing_does_not_hold_up_device_requests(sim) -> None:
    from arca.host.simtee import locations

    td = sim.register("td", desc("/t").to_json(), None)
    mute = _connect(str(locations.control_socket()))
    mute.sendall(b'{"op": "li')  # and nothing more: served until CONTROL_TIMEOUT_S
    try:
        time.sleep(0.1)
        assert _reports(td["socket"], "td", desc("/t").measurement().hex(), 2) < BOUND_S
    finally:
        mute.close()
    assert sim.list_tds() == [{"td_id": "td", "measurement": desc("/t").measurement().hex()}]


def test_a_connection_that_does_not_send_its_request_in_time_is_closed(sim) -> None:
    td = sim.register("slow", desc("/s").to_json(), None)
    idle = _connect(td["socket"], 10)
    dribble = _connect(td["socket"], 10)
    t = time.monotonic()
    for c in b'{"report_':  # slowloris: a byte now and then does not extend the deadline
        dribble.sendall(bytes([c]))
        time.sleep(0.15)
    for s in (idle, dribble):
        assert _answer(s) == {"error": f"no request within {daemon.REQUEST_LINE_TIMEOUT_S:g}s"}
    took = time.monotonic() - t
    assert daemon.REQUEST_LINE_TIMEOUT_S - 0.2 < took < daemon.REQUEST_LINE_TIMEOUT_S + 1
    # Their slots are back: the TD can use its whole allowance again.
    conns = [_connect(td["socket"]) for _ in range(daemon.MAX_REQUESTS_PER_TD)]
    for s in conns:
        s.sendall(json.dumps({"report_data": "00" * 64}).encode() + b"\n")
    assert all("evidence" in _answer(s) for s in conns)


def test_compromised_tds_flooding_real_requests_do_not_starve_an_honest_td(sim) -> None:
    hostile = [sim.register(f"flood{i}", desc(f"/f{i}").to_json(), None)["socket"]
               for i in range(HOSTILE)]
    honest = sim.register("honest", desc("/ok").to_json(), None)
    stop = threading.Event()
    served = [0]

    def flood(path: str) -> None:
        while not stop.is_set():
            try:
                s = _connect(path)
                s.sendall(json.dumps({"report_data": "00" * 64}).encode() + b"\n")
                if "evidence" in _answer(s):
                    served[0] += 1
            except (OSError, ValueError):  # refused: at its cap, or the pool is taken
                pass

    threads = [threading.Thread(target=flood, args=(p,), daemon=True)
               for p in hostile for _ in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 5
        while served[0] < 50:
            assert time.monotonic() < deadline, served
            time.sleep(0.01)
        for _ in range(3):
            took = _reports(honest["socket"], "honest", desc("/ok").measurement().hex(),
                            daemon.RESERVED_REQUESTS_PER_TD)
            assert took < BOUND_S, f"honest reports took {took:.2f}s under a flood"
    finally:
        stop.set()
        for t in threads:
            t.join(10)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_descriptors_the_daemon_pauses_instead_of_spinning_then_recovers(sim) -> None:
    """A TD whose connections make the daemon's ``accept`` fail (EMFILE) must not make it spin
    on the still-readable listener; with descriptors back, reports flow again."""
    import resource

    td = sim.register("td", desc("/t").to_json(), None)
    pid = sim.read_pid()
    assert pid is not None
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 2, old[1]))
    conns = []
    try:
        for _ in range(12):  # more than the daemon can accept; the rest wait in its backlog
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            try:
                s.connect(td["socket"])
            except BlockingIOError:
                s.close()
                break
            conns.append(s)
        time.sleep(0.3)  # the daemon now fails to accept what waits in its backlog
        before, t0 = _cpu_seconds(pid), time.monotonic()
        time.sleep(1.0)
        used = (_cpu_seconds(pid) - before) / (time.monotonic() - t0)
        assert used < 0.3, f"the daemon used {used:.0%} of a CPU while out of descriptors"
    finally:
        for s in conns:
            s.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, old)
    deadline = time.monotonic() + 10
    while True:
        try:
            _reports(td["socket"], "td", desc("/t").measurement().hex(), 2)
            break
        except (AssertionError, OSError):
            assert time.monotonic() < deadline, "no report after the descriptors came back"
            time.sleep(0.2)
    from arca.host.simtee import locations

    assert "cannot accept device connections" in locations.log_file().read_text()
