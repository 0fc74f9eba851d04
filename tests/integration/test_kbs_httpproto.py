"""The parser-level protocol path (``arca.kbs.httpserver``) against a real ``arca kbs serve``.

Raw sockets, so what goes over the wire is checked byte for byte: one answer per request in
order (keep-alive, pipelining, mixed with requests FastAPI serves), the same status, headers
and body as the ASGI path for the same requests, ``Connection: close`` honoured, body limits
by ``Content-Length`` and while streaming (the connection stays usable), and the requests the
parser path declines (query, percent-encoding, HTTP/1.0, ``Expect``) still answered right.
"""

from __future__ import annotations

import json
import pathlib
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from arca.kbs.app import MAX_ATTEST_BYTES, MAX_OTHER_BYTES, create_app
from arca.kbs.config import KbsConfig
from arca.kbs.service import KbsService
from arca.kbs.tokens import make_admin_token
from arca.wire import kbs_protocol as proto
from tests.support.kbs import sim_kbs

PROBLEM = "https://github.com/confidential-containers/kbs/errors/"
AUTH = json.dumps(proto.Request("sim").to_json()).encode()


@pytest.fixture(scope="module")
def kbs(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("kbs-httpproto")
    with sim_kbs(d) as (server, _, key):
        yield server, d, key


class Conn:
    def __init__(self, url: str) -> None:
        host, port = url.rsplit("/", 1)[1].split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> tuple[int, dict[str, str], bytes]:
        """One answer: status, headers (lower-case names), body (by Content-Length)."""
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"duplicate header {name}"
            headers[name.lower()] = value.strip()
        if lines[0].split()[1] == "100":
            return 100, headers, b""
        n = int(headers["content-length"])
        while len(self.buf) < n:
            self._more()
        body, self.buf = self.buf[:n], self.buf[n:]
        return int(lines[0].split()[1]), headers, body

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        self.buf += data

    def close(self) -> None:
        self.sock.close()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def problem(answer: tuple[int, dict[str, str], bytes], status: int, name: str) -> None:
    got_status, headers, body = answer
    assert got_status == status, body
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["type"] == PROBLEM + name


def test_keep_alive_and_pipelining_keep_the_order(kbs):
    server, _, key = kbs
    c = Conn(server.url)
    try:
        admin = f"Authorization: Bearer {make_admin_token(key)}\r\n"
        # auth (parser path), healthz and an admin call (FastAPI), auth again: one write
        c.send(post("/kbs/v0/auth", AUTH) + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
               + f"GET /kbs/v0/resource-policy HTTP/1.1\r\nHost: x\r\n{admin}\r\n".encode()
               + post("/kbs/v0/auth", AUTH) + post("/kbs/v0/auth", b"{"))
        first, health, policy, second, bad = (c.read() for _ in range(5))
        assert first[0] == 200 and set(json.loads(first[2])) == {"nonce", "extra-params"}
        assert health[0] == 200 and json.loads(health[2]) == {"status": "ok"}
        assert policy[0] == 200 and "policy" in json.loads(policy[2])
        assert second[0] == 200 and json.loads(second[2])["nonce"] != json.loads(first[2])["nonce"]
        problem(bad, 400, "SerdeError")
        for status, headers, _ in (first, second):
            assert headers["set-cookie"].startswith("kbs-session-id=")
            assert "date" in headers and "server" in headers
    finally:
        c.close()


def test_answers_equal_the_asgi_path(kbs, tmp_path: pathlib.Path):
    """Same requests through TestClient (ASGI) and the running server (parser path)."""
    server, d, _ = kbs
    cfg = KbsConfig(data_dir=str(tmp_path), trust_sim_root=(str(d / "root.pem"),),
                    insecure_http=True)
    svc = KbsService(cfg)
    try:
        client = TestClient(create_app(cfg, svc), base_url="http://127.0.0.1")
        c = Conn(server.url)
        cases = [(post("/kbs/v0/auth", AUTH), ("POST", "/kbs/v0/auth", AUTH)),
                 (post("/kbs/v0/auth", b"[]"), ("POST", "/kbs/v0/auth", b"[]")),
                 (post("/kbs/v0/attest", b"{}"), ("POST", "/kbs/v0/attest", b"{}")),
                 (b"GET /kbs/v0/resource/a/b/c HTTP/1.1\r\nHost: x\r\n\r\n",
                  ("GET", "/kbs/v0/resource/a/b/c", None)),
                 (b"GET /kbs/v0/resource/a/b HTTP/1.1\r\nHost: x\r\n\r\n",
                  ("GET", "/kbs/v0/resource/a/b", None))]
        for raw, (method, path, body) in cases:
            c.send(raw)
            status, headers, got = c.read()
            client.cookies.clear()  # the raw connection sends none either
            ref = client.request(method, path, content=body)
            assert status == ref.status_code
            assert headers["content-type"] == ref.headers["content-type"]
            if "nonce" not in ref.text:
                assert got == ref.content
            else:
                assert set(json.loads(got)) == set(ref.json())
                ours = headers["set-cookie"].split(";", 1)[1]
                assert ours == ref.headers["set-cookie"].split(";", 1)[1]
        c.close()
    finally:
        svc.close()


def test_connection_close_is_honoured(kbs):
    c = Conn(kbs[0].url)
    try:
        c.send(post("/kbs/v0/auth", AUTH, "Connection: close\r\n"))
        status, headers, _ = c.read()
        assert status == 200 and headers["connection"] == "close"
        assert c.closed()
    finally:
        c.close()


def test_body_limits_by_length_and_while_streaming(kbs):
    c = Conn(kbs[0].url)
    try:
        c.send(post("/kbs/v0/auth", b"x" * (MAX_OTHER_BYTES + 1)))
        problem(c.read(), 413, "PayloadTooLarge")
        chunk = b"y" * (256 * 1024)
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk)
                           for _ in range(MAX_ATTEST_BYTES // len(chunk) + 1)) + b"0\r\n\r\n"
        c.send(b"POST /kbs/v0/attest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               + chunked)
        problem(c.read(), 413, "PayloadTooLarge")
        c.send(post("/kbs/v0/auth", AUTH))  # the connection is still in step
        assert c.read()[0] == 200
    finally:
        c.close()


@pytest.mark.parametrize(("request_bytes", "status", "name"), [
    (b"GET /kbs/v0/resource/a/b/%63 HTTP/1.1\r\nHost: x\r\n\r\n", 404, "InvalidRequestPath"),
    (b"GET /kbs/v0/resource/a/b/c?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", 401, "TokenNotFound"),
    (b"GET /kbs/v0/resource/a/b/c HTTP/1.0\r\nHost: x\r\n\r\n", 401, "TokenNotFound"),
    (post("/kbs/v0/auth", b"{}", "Expect: 100-continue\r\n"), 400, "SerdeError"),
    (b"GET /kbs/v0/auth HTTP/1.1\r\nHost: x\r\n\r\n", 405, "MethodNotAllowed"),
])
def test_requests_the_parser_path_declines_are_still_answered(kbs, request_bytes, status,
                                                              name):
    c = Conn(kbs[0].url)
    try:
        c.send(request_bytes)
        answer = c.read()
        if answer[0] == 100:  # Expect: 100-continue
            answer = c.read()
        problem(answer, status, name)
    finally:
        c.close()


_PLAIN_APP = """
import asyncio, socket, sys
from arca.kbs.httpserver import serve_forever

async def app(scope, receive, send):  # any ASGI app: no KBS fast path
    if scope["type"] != "http":
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    if scope["path"] == "/slow":
        await asyncio.sleep(1)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["path"].encode() + b" " + body})

sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
print(sock.getsockname()[1], flush=True)
asyncio.run(serve_forever(app, sock, None))
"""


def test_the_server_serves_any_asgi_app_and_stops_gracefully(tmp_path: pathlib.Path):
    """``arca.kbs.httpserver`` without a KBS app: every request, protocol paths included, goes
    to the ASGI app (no fast path); an answer without Content-Length is chunked; SIGTERM lets
    the request in progress finish, then the server exits."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _PLAIN_APP], stdout=subprocess.PIPE)
    try:
        port = int(proc.stdout.readline())
        c = Conn(f"http://127.0.0.1:{port}")
        c.send(post("/kbs/v0/auth", AUTH))
        head = b""
        while b"0\r\n\r\n" not in head:
            head += c.sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"transfer-encoding: chunked\r\n" in head and AUTH in head
        slow = Conn(f"http://127.0.0.1:{port}")
        slow.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        import time
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        data = b""
        while b"0\r\n\r\n" not in data:
            chunk = slow.sock.recv(65536)
            assert chunk, data
            data += chunk
        assert b"connection: close" in data and b"/slow" in data
        assert proc.wait(10) == 0
        c.close()
        slow.close()
    finally:
        proc.kill()
        proc.wait()


def _children(pid: int) -> list[int]:
    out = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_workers_share_the_socket_and_stop_on_sigterm_to_the_parent(tmp_path: pathlib.Path):
    """``--workers 2``: two forked workers answer on one socket; SIGTERM to the parent alone
    (as an init system sends it) stops both, and the parent exits 0."""
    import os
    import signal

    from tests.support.kbs import start_kbs

    kbs = start_kbs(tmp_path / "data", "--workers", "2")
    try:
        workers = _children(kbs.proc.pid)
        assert len(workers) == 2, workers
        c = Conn(kbs.url)
        c.send(post("/kbs/v0/auth", AUTH))  # sim not enabled here: refused, on the fast path
        problem(c.read(), 401, "AttestationError")
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read()[0] == 200
        os.kill(kbs.proc.pid, signal.SIGTERM)
        assert kbs.proc.wait(15) == 0
        assert c.closed()  # the idle keep-alive connection was closed, not left hanging
        for pid in workers:
            assert not pathlib.Path(f"/proc/{pid}").exists() or \
                "zombie" in pathlib.Path(f"/proc/{pid}/status").read_text().lower()
        c.close()
    finally:
        kbs.kill()


_KINDS = {  # request -> the status it always gets on its own
    "auth": (post("/kbs/v0/auth", AUTH), 200),
    "auth-bad": (post("/kbs/v0/auth", b"{"), 400),
    "attest-no-session": (post("/kbs/v0/attest", b"{}"), 401),
    "resource-no-session": (b"GET /kbs/v0/resource/a/b/c HTTP/1.1\r\nHost: x\r\n\r\n", 401),
    "resource-bad-path": (b"GET /kbs/v0/resource/a/../c HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    "healthz": (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    "wrong-method": (b"GET /kbs/v0/auth HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    "too-big": (post("/kbs/v0/auth", b" " * (MAX_OTHER_BYTES + 1)), 413),
    "chunked-auth": (b"POST /kbs/v0/auth HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(AUTH), AUTH), 200),
}


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(sorted(_KINDS)), min_size=1, max_size=8),
       cuts=st.lists(st.integers(1, 4000), max_size=6))
def test_any_pipelined_mix_split_anywhere_gets_its_answers_in_order(kbs, kinds, cuts):
    data = b"".join(_KINDS[k][0] for k in kinds)
    c = Conn(kbs[0].url)
    try:
        at = 0
        for n in cuts:  # the same bytes, cut into arbitrary segments
            c.send(data[at:at + n])
            at += n
        c.send(data[at:])
        got = [c.read()[0] for _ in kinds]
        assert got == [_KINDS[k][1] for k in kinds]
    finally:
        c.close()
