"""The admin client's own HTTP/1.1 framing and key loading (issue 15: `arca kbs admin` starts
without httpx): answers framed every way a server may frame them, and what it refuses."""

from __future__ import annotations

import pathlib
import socket
import threading

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from arca.cli.main import main
from arca.kbs.admin_client import load_admin_private_key
from arca.kbs.admin_http import HttpError, request, split_url
from arca.kbs.tokens import verify_admin


def serve_once(answer: bytes) -> tuple[str, list[bytes]]:
    """A server that answers one connection with ``answer`` and closes; what it was sent."""
    srv = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def run() -> None:
        conn, _ = srv.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            got.append(data)
            conn.sendall(answer)
        srv.close()

    threading.Thread(target=run, daemon=True).start()
    return f"http://127.0.0.1:{srv.getsockname()[1]}", got


@pytest.mark.parametrize("answer, body", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
     b"hello"),
    (b"HTTP/1.0 404 Not Found\r\n\r\n{\"detail\": 1}", b"{\"detail\": 1}"),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
])
def test_framings(answer: bytes, body: bytes) -> None:
    url, got = serve_once(answer)
    r = request("POST", url + "/kbs/v0/x?y=1", {"Authorization": "Bearer t"}, b"abc",
                timeout=5, tls=None)
    assert r.content == body
    head = got[0].decode()
    assert head.startswith("POST /kbs/v0/x?y=1 HTTP/1.1\r\n") and "Content-Length: 3" in head
    assert "Authorization: Bearer t" in head and "Connection: close" in head


@pytest.mark.parametrize("answer, why", [
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "truncated"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    (b"", "connection closed"),
])
def test_malformed_answers_refused(answer: bytes, why: str) -> None:
    url, _ = serve_once(answer)
    with pytest.raises(HttpError, match=why):
        request("GET", url, {}, None, timeout=5, tls=None)


def test_split_url() -> None:
    assert split_url("http://h") == ("h", 80, "/")
    assert split_url("https://h:8443/a/b?c") == ("h", 8443, "/a/b?c")
    assert split_url("http://[::1]:9/x") == ("::1", 9, "/x")
    for bad in ("ftp://h", "http://h:99999", "http://:80", "h:80"):
        with pytest.raises(HttpError):
            split_url(bad)


def test_pkcs8_key_fast_path_and_other_formats(tmp_path: pathlib.Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = tmp_path / "k.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    raw = key.private_bytes_raw()
    assert load_admin_private_key(pem).private_bytes_raw() == raw
    # a token from it verifies with the public key (the KBS's check)
    from arca.kbs.admin_client import admin_token

    assert verify_admin(admin_token(key), key.public_key())["exp"] > 0
    ssh = tmp_path / "k.ssh"  # not PKCS#8: cryptography's loader decides, one line
    ssh.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.OpenSSH,
                                      serialization.NoEncryption()))
    with pytest.raises(Exception, match="admin key"):
        load_admin_private_key(ssh)


def test_unreachable_kbs_is_one_line(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "admin.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    monkeypatch.setenv("ARCA_CLI_FASTPATH", "1")
    with pytest.raises(SystemExit) as e:
        main(["kbs", "admin", "--url", f"http://127.0.0.1:{port}", "--admin-key",
              str(tmp_path / "admin.key"), "get-reference-values"])
    assert e.value.code != 0
    err = capsys.readouterr().err
    assert err == f"arca: error: KBS http://127.0.0.1:{port} unreachable: Connection refused\n"
