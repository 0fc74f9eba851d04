"""The guest KBS client's plain-HTTP connections: real listening sockets on loopback, name
resolution, address fall-back, refused connections."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from arca.guest.kbs_client import KbsClient
from arca.wire.errors import BrokerUnavailable

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"


def _client(url: str) -> KbsClient:
    return KbsClient(url, tee="sim", evidence=lambda rd: rd, timeout=5)


def _call(client: KbsClient, method: str, path: str, body: object = None):  # noqa: ANN201
    return client._receive(client._send(method, path, body), method, path)


@pytest.fixture
def server() -> Iterator[tuple[socket.socket, list[bytes]]]:
    """An HTTP/1.1 server on 127.0.0.1 answering every connection once; records requests."""
    srv = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                seen.append(data)
                conn.sendall(ANSWER)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv, seen
    srv.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
    srv.close()
    t.join(5)


def test_http_by_name_sends_one_request_per_connection(
        server: tuple[socket.socket, list[bytes]]) -> None:
    port = server[0].getsockname()[1]
    client = _client(f"http://localhost:{port}/prefix")
    for _ in range(2):
        headers, body = _call(client, "GET", "/kbs/v0/x")
        assert body == b"{}" and ("Content-Length", "2") in headers
    assert len(server[1]) == 2
    assert server[1][0].startswith(b"GET /prefix/kbs/v0/x HTTP/1.1\r\nHost: localhost:")
    assert b"Connection: close\r\n" in server[1][0]


def test_falls_back_to_the_next_address(server: tuple[socket.socket, list[bytes]],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    port = server[0].getsockname()[1]
    dead = socket.create_server(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens there any more: connecting is refused
    real = socket.getaddrinfo

    def two_addresses(host: str, port_: int, *args: object) -> list[tuple[object, ...]]:
        first = real("127.0.0.1", dead_port, *args)  # type: ignore[arg-type]
        return [*first, *real("127.0.0.1", port, *args)]  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    assert _call(_client(f"http://kbs.test:{port}"), "GET", "/")[1] == b"{}"


def test_refused_is_broker_unavailable_naming_the_url() -> None:
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(BrokerUnavailable, match=f"KBS http://127.0.0.1:{port} unreachable"):
        _call(_client(f"http://127.0.0.1:{port}"), "POST", "/kbs/v0/auth", {})


def test_ipv6_literal() -> None:
    try:
        srv = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = srv.getsockname()[1]

    def answer() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(ANSWER)

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        assert _call(_client(f"http://[::1]:{port}"), "GET", "/")[1] == b"{}"
    finally:
        t.join(5)
        srv.close()
