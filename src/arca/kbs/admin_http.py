"""One HTTP/1.1 request over a fresh connection, for the KBS admin client
(:mod:`arca.kbs.admin_client`): what ``arca kbs admin`` needs and no more, so the command
starts without importing httpx or ``http.client`` (issue 15).

``Connection: close``; the answer is read to its framing (``Content-Length``, chunked, or the
end of the connection) and bounded (:data:`MAX_RESPONSE_BYTES`: the admin API answers with
policies, reference values and resources, none near it).
"""

from __future__ import annotations

import socket

from arca._internal.fastjson import json_loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from typing import Any

MAX_RESPONSE_BYTES = 64 << 20
MAX_HEAD_BYTES = 64 << 10


class HttpError(Exception):
    """The server's answer is not HTTP/1.x as framed here (or is too large)."""


class Response:
    """The parts of an httpx response the admin client reads."""

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json_loads(self.content)


def request(method: str, url: str, headers: dict[str, str], body: bytes | None, *,
            timeout: float, tls: ssl.SSLContext | None) -> Response:
    host, port, target = split_url(url)
    netloc = f"[{host}]" if ":" in host else host
    hdrs = {"Host": f"{netloc}:{port}", "Connection": "close", "Accept": "*/*",
            "Content-Length": str(len(body or b"")), **headers}
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    with socket.create_connection((host, port), timeout=timeout) as raw:
        if tls is None:
            raw.sendall(head.encode("latin-1") + (body or b""))
            return _read_response(raw, method)
        with tls.wrap_socket(raw, server_hostname=host) as sock:
            sock.sendall(head.encode("latin-1") + (body or b""))
            return _read_response(sock, method)


def split_url(url: str) -> tuple[str, int, str]:
    """(host, port, request target) of ``http[s]://HOST[:PORT][/PATH]`` (``[v6]`` hosts too);
    written out because ``urllib.parse`` imports ``re``."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise HttpError(f"URL {url!r} must be http:// or https://")
    authority, slash, path = rest.partition("/")
    authority = authority.rpartition("@")[2]
    host, port = authority, 443 if scheme == "https" else 80
    if authority.startswith("["):
        host, _, tail = authority[1:].partition("]")
        if tail.startswith(":"):
            port = _port(tail[1:], url)
    elif ":" in authority:
        host, _, p = authority.rpartition(":")
        port = _port(p, url)
    if not host:
        raise HttpError(f"URL {url!r} names no host")
    return host, port, slash + path if slash else "/"


def _port(text: str, url: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise HttpError(f"URL {url!r}: bad port {text!r}")
    return int(text)


def _read_response(sock: Any, method: str) -> Response:
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise HttpError("connection closed before the response head")
        buf += chunk
        if len(buf) > MAX_HEAD_BYTES and b"\r\n\r\n" not in buf[:MAX_HEAD_BYTES + 4]:
            raise HttpError("response head too large")
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, _, tail = status_line.partition(" ")
    code = tail[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise HttpError(f"not an HTTP/1.x response: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    status = int(code)
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return Response(status, headers, b"")
    data = _read_to_end(sock, bytearray(rest))
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return Response(status, headers, _dechunk(data))
    if "content-length" in headers:
        try:
            n = int(headers["content-length"])
        except ValueError:
            raise HttpError("bad Content-Length") from None
        if len(data) < n:
            raise HttpError(f"response body truncated ({len(data)} of {n} bytes)")
        return Response(status, headers, bytes(data[:n]))
    return Response(status, headers, bytes(data))


def _read_to_end(sock: Any, buf: bytearray) -> bytearray:
    while chunk := sock.recv(1 << 20):
        buf += chunk
        if len(buf) > MAX_RESPONSE_BYTES:
            raise HttpError(f"response larger than {MAX_RESPONSE_BYTES} bytes")
    return buf


def _dechunk(data: bytearray) -> bytes:
    out = bytearray()
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            raise HttpError("truncated chunked body")
        try:
            size = int(bytes(data[pos:end]).split(b";")[0], 16)
        except ValueError:
            raise HttpError("bad chunk size") from None
        if size == 0:
            return bytes(out)
        start = end + 2
        if start + size + 2 > len(data):
            raise HttpError("truncated chunked body")
        out += data[start:start + size]
        pos = start + size + 2
