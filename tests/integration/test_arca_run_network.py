"""Issue 13, item 14: every ``arca run`` container gets a private network namespace (pasta)
with outbound access and ``-p`` publishing, ``--network host|none`` only when asked, and
podman's default capabilities (no ``CAP_NET_RAW``).

The attack: a TD serves its secret over plain HTTP on its own loopback and fetches it in a
loop (what a workload talking to a local sidecar does); another container, on the same host,
tries to read it by connecting to that loopback port and by sniffing every interface it can
see with a raw packet socket. Both work when containers share the host's network with
``CAP_NET_RAW``."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

from arca.host.containers.spec import DEFAULT_CAPS
from arca.host.guestruntime import ensure_guest_runtime
from tests.support.arca_run import NEEDS_ROOT_RUNC_UMOCI, arca, image_world

pytestmark = [pytest.mark.integration, NEEDS_ROOT_RUNC_UMOCI]

VICTIM = """
import socket, time
SECRET = b"SECRET-%(tag)s"
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", %(port)d)); srv.listen(8)
print("serving", flush=True)
while True:
    c = socket.create_connection(("127.0.0.1", %(port)d)); s, _ = srv.accept()
    c.sendall(b"GET /secret HTTP/1.0\\r\\n\\r\\n"); s.recv(100)
    s.sendall(b"HTTP/1.0 200 OK\\r\\n\\r\\n" + SECRET); s.close(); c.recv(200); c.close()
    time.sleep(0.02)
"""

# Sniffs first: its own connection would be served instead of the victim's and stall it.
ATTACKER = """
import socket, time
out = []
try:
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
except OSError as e:
    out.append("no-packet-socket:" + type(e).__name__)
else:
    raw.settimeout(0.2); end = time.monotonic() + 3; seen = False
    while time.monotonic() < end and not seen:
        try:
            seen = b"SECRET-%(tag)s" in raw.recv(65535)
        except OSError:
            pass
    out.append("sniffed" if seen else "sniffed-nothing")
try:
    c = socket.create_connection(("127.0.0.1", %(port)d), timeout=2)
    c.sendall(b"GET /secret HTTP/1.0\\r\\n\\r\\n"); out.append("connected:" + c.recv(200).decode())
except OSError as e:
    out.append("connect-failed:" + type(e).__name__)
print(" ".join(out), flush=True)
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    with image_world(tmp_path_factory, "net", "arn-") as (layout, env, _):
        yield f"oci:{layout}:v1", env


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def python_in_td(env: dict[str, str], code: str) -> list[str]:
    """A TD's command running the guest runtime's Python (the image has none)."""
    gr = ensure_guest_runtime(pathlib.Path(env["ARCA_ROOT"]))
    return [*gr.python_args(), "-c", code]


def wait_for_log(env: dict[str, str], name: str, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while text not in (out := arca(env, "logs", name).stdout):
        assert time.monotonic() < deadline, out
        time.sleep(0.1)
    return out


def test_a_container_cannot_reach_or_sniff_another_containers_loopback(
        world: tuple[str, dict[str, str]]) -> None:
    image, env = world
    port, tag = free_port(), os.urandom(6).hex()
    victim = arca(env, "run", "-d", "--name", "victim", "--tee", "sim", image,
                  *python_in_td(env, VICTIM % {"port": port, "tag": tag}))
    assert victim.returncode == 0, victim.stderr
    try:
        wait_for_log(env, "victim", "serving")
        res = arca(env, "run", "--rm", "--tee", "sim", image,
                   *python_in_td(env, ATTACKER % {"port": port, "tag": tag}))
        assert res.returncode == 0, res.stderr
        words = res.stdout.split()
        assert not any(w.startswith("connected") for w in words), res.stdout
        assert "sniffed" not in words, res.stdout
        # no raw packet socket at all: CAP_NET_RAW is not in the default set
        assert "no-packet-socket:PermissionError" in words, res.stdout
    finally:
        arca(env, "rm", "-f", "victim")


def test_default_capabilities_are_podmans(world: tuple[str, dict[str, str]]) -> None:
    image, env = world
    res = arca(env, "run", "--rm", "--tee", "none", image, "grep", "CapBnd", "/proc/self/status")
    assert res.returncode == 0, res.stderr
    podman = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE",
              "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"]
    assert sorted(c.removeprefix("CAP_") for c in DEFAULT_CAPS) == podman
    numbers = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5,
               "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "NET_BIND_SERVICE": 10,
               "SYS_CHROOT": 18, "SETFCAP": 31}
    assert int(res.stdout.split()[1], 16) == sum(1 << numbers[c] for c in podman)


@pytest.mark.parametrize("tee", ["none", "sim"])
def test_publish_reaches_the_container(world: tuple[str, dict[str, str]], tee: str) -> None:
    image, env = world
    port = free_port()
    name = f"web-{tee}"
    res = arca(env, "run", "-d", "--name", name, "--tee", tee, "-p", f"127.0.0.1:{port}:8080",
               image, "sh", "-c", "mkdir /www && echo published-$HOSTNAME > /www/index.html "
               "&& exec busybox httpd -f -p 8080 -h /www")
    assert res.returncode == 0, res.stderr
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert body.startswith(b"published-")
        # podman's port: every mapping, or the host side of one
        assert arca(env, "port", name).stdout == f"8080/tcp -> 127.0.0.1:{port}\n"
        assert arca(env, "port", name, "8080/tcp").stdout == f"127.0.0.1:{port}\n"
        assert arca(env, "port", name, "81").returncode == 125
        # the port is taken: a second container publishing it fails in one line
        again = arca(env, "run", "--rm", "--tee", "none", "-p", f"127.0.0.1:{port}:80", image,
                     "true")
        assert again.returncode != 0 and "Traceback" not in again.stderr
        assert f"publishing {port}/tcp" in again.stderr and len(again.stderr.splitlines()) == 1
    finally:
        assert arca(env, "rm", "-f", name).returncode == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
    assert os.listdir(pathlib.Path(env["ARCA_RUN"]) / "netns") == []


def _serve_once(host: str, port: int, payload: bytes) -> threading.Thread:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(4)
    srv.settimeout(15)

    def loop() -> None:
        with srv:
            try:
                while True:
                    c, _ = srv.accept()
                    with c:
                        c.sendall(payload)
            except OSError:
                pass

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def _outside_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: picks the outbound address
        except OSError:
            return None
        addr = str(s.getsockname()[0])
    return None if addr.startswith("127.") else addr


def test_outbound_works_but_host_loopback_services_are_not_reachable(
        world: tuple[str, dict[str, str]]) -> None:
    image, env = world
    outside = _outside_address()
    if outside is None:
        pytest.skip("no non-loopback address on this host")
    out_port, lo_port = free_port(outside), free_port()
    _serve_once(outside, out_port, b"outside-ok\n")
    _serve_once("127.0.0.1", lo_port, b"host-loopback-leak\n")
    res = arca(env, "run", "--rm", "--tee", "none", image, "sh", "-c",
               f"busybox timeout 5 busybox nc {outside} {out_port} </dev/null; "
               f"busybox timeout 3 busybox nc 127.0.0.1 {lo_port} </dev/null; "
               f"busybox timeout 3 busybox nc 10.0.2.2 {lo_port} </dev/null; true")
    assert "outside-ok" in res.stdout, res.stderr
    assert "leak" not in res.stdout


def test_network_host_and_none(world: tuple[str, dict[str, str]]) -> None:
    image, env = world
    show = ["sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort"]
    ifaces = {m: arca(env, "run", "--rm", "--tee", "none", "--network", m, image, *show)
              for m in ("private", "host", "none")}
    assert all(r.returncode == 0 for r in ifaces.values()), ifaces
    assert ifaces["none"].stdout.split() == ["lo"]
    assert ifaces["private"].stdout.split() == ["eth0", "lo"]
    host = sorted(i.split(":")[0].strip() for i in
                  pathlib.Path("/proc/net/dev").read_text().splitlines()[2:])
    assert ifaces["host"].stdout.split() == host
    bad = arca(env, "run", "--rm", "--network", "host", "-p", "8080:80", image, "true")
    assert bad.returncode != 0 and "needs a private network" in bad.stderr
    for spec in ("80", "x:80", "70000:80", "8080:80/sctp", "::1:8080:80"):
        bad = arca(env, "run", "--rm", "-p", spec, image, "true")
        assert bad.returncode != 0 and "Traceback" not in bad.stderr, spec
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert json.loads(arca(env, "ps", "-a", "--json").stdout) == []


def test_rm_after_the_monitor_was_killed_leaves_no_pasta_or_namespace(
        world: tuple[str, dict[str, str]]) -> None:
    image, env = world
    res = arca(env, "run", "-d", "--name", "orphan", "--tee", "none", image, "sleep", "60")
    assert res.returncode == 0, res.stderr
    cid = res.stdout.strip()
    netns = pathlib.Path(env["ARCA_RUN"]) / "netns" / cid
    pasta = int((netns.parent / f"{cid}.pasta.pid").read_text())
    assert b"pasta" in pathlib.Path(f"/proc/{pasta}/cmdline").read_bytes()
    os.kill(json.loads(arca(env, "inspect", "orphan").stdout)["monitor_pid"], 9)
    assert arca(env, "rm", "-f", "orphan").returncode == 0
    deadline = time.monotonic() + 10
    while pathlib.Path(f"/proc/{pasta}").exists() and b"pasta" in pathlib.Path(
            f"/proc/{pasta}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "pasta outlived its container"
        time.sleep(0.05)
    assert not netns.exists()
    assert str(netns) not in pathlib.Path("/proc/self/mountinfo").read_text()
