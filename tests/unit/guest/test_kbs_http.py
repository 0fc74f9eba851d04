"""The guest KBS client's HTTP/1.1 response parser (untrusted input: the broker or anyone on
the path before TLS), and its URL handling."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.guest.kbs_client import MAX_RESPONSE_BYTES, KbsClient, parse_response


def _client(url: str) -> KbsClient:
    return KbsClient(url, tee="sim", evidence=lambda rd: rd)


def test_content_length_and_headers() -> None:
    raw = (b"HTTP/1.1 200 OK\r\nSet-Cookie: kbs-session-id=abc; Path=/\r\n"
           b"Content-Length: 5\r\n\r\nhelloEXTRA")
    status, headers, body = parse_response(raw)
    assert status == 200 and body == b"hello"
    assert ("Set-Cookie", "kbs-session-id=abc; Path=/") in headers


def test_chunked_and_read_to_eof() -> None:
    raw = (b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n")
    assert parse_response(raw) == (404, [("Transfer-Encoding", "chunked")], b"abcde")
    assert parse_response(b"HTTP/1.0 204 No Content\r\n\r\n")[::2] == (204, b"")
    assert parse_response(b"HTTP/1.1 200\r\n\r\n{}")[2] == b"{}"


@pytest.mark.parametrize("raw", [
    b"", b"HTTP/1.1 200 OK\r\n", b"HTTP/2 200 OK\r\n\r\n", b"HTTP/1.1 2x0 OK\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n", b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % (MAX_RESPONSE_BYTES + 1),
    b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * (MAX_RESPONSE_BYTES + 1),
])
def test_malformed_truncated_or_oversized_are_value_errors(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_response(raw)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300) | st.builds(
    lambda code, hdrs, body: b"HTTP/1.1 %d X\r\n" % code + hdrs + b"\r\n\r\n" + body,
    st.integers(0, 999), st.binary(max_size=80), st.binary(max_size=80)))
def test_fuzz_only_value_errors(raw: bytes) -> None:
    try:
        status, headers, body = parse_response(raw)
    except ValueError:
        return
    assert 0 <= status <= 999 and len(body) <= len(raw)


@given(st.binary(max_size=2000), st.integers(1, 50))
def test_chunked_round_trip(body: bytes, size: int) -> None:
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                      for i in range(0, len(body), size))
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    assert parse_response(raw)[2] == body


@pytest.mark.parametrize(("url", "addr", "prefix"), [
    ("http://127.0.0.1:8080", ("127.0.0.1", 8080), ""),
    ("https://kbs.example/", ("kbs.example", 443), ""),
    ("http://kbs/prefix/", ("kbs", 80), "/prefix"),
    ("http://[::1]:9/x", ("::1", 9), "/x"),
])
def test_url_parts(url: str, addr: tuple[str, int], prefix: str) -> None:
    c = _client(url)
    assert (c._addr, c._prefix) == (addr, prefix)
    assert (c._ssl is not None) == url.startswith("https")


@pytest.mark.parametrize(("headers", "cookie"), [
    ([("Set-Cookie", "kbs-session-id=abc; Path=/")], "abc"),
    ([("set-cookie", " kbs-session-id=A-1_b.c ")], "A-1_b.c"),
    ([("Set-Cookie", "other=x"), ("Set-Cookie", "kbs-session-id=z; HttpOnly")], "z"),
    ([("Set-Cookie", "kbs-session-id=")], None),
    ([("Set-Cookie", "kbs-session-id=a b")], None),
    ([("Set-Cookie", "kbs-session-id=a\"b")], None),  # would break the Cookie header we send
    ([("Set-Cookie", "xkbs-session-id=abc")], None),
    ([("X-Set-Cookie", "kbs-session-id=abc")], None),
    ([], None),
])
def test_session_cookie(headers: list[tuple[str, str]], cookie: str | None) -> None:
    from arca.guest.kbs_client import _session_cookie
    from arca.wire.errors import WireFormatError

    if cookie is None:
        with pytest.raises(WireFormatError, match="kbs-session-id"):
            _session_cookie(headers)
    else:
        assert _session_cookie(headers) == cookie


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_session_cookie_is_a_token_or_refused(value: str) -> None:
    """Whatever the broker sends, what goes back in our ``Cookie`` header is a plain token."""
    from arca.guest.kbs_client import _session_cookie
    from arca.wire.errors import WireFormatError
    from arca.wire.initdata import NAME_CHARS

    try:
        got = _session_cookie([("Set-Cookie", "kbs-session-id=" + value)])
    except WireFormatError:
        return
    assert got and set(got) <= NAME_CHARS and value.strip().startswith(got)


@pytest.mark.parametrize(("path", "ok"), [
    ("default/key/k", True), ("a-b/c.d/e_f", True), ("a/b", False), ("a/b/c/d", False),
    ("a/../c", False), ("./b/c", False), ("a/b/..", False), ("a/b/c?x=1", False),
    ("a/b/%2e%2e", False), ("a/b/c d", False), ("", False)])
def test_resource_paths_are_checked_before_any_request(path: str, ok: bool) -> None:
    client = _client("http://127.0.0.1:1")  # nothing listens: a request would fail differently
    if ok:
        with pytest.raises(Exception, match="unreachable"):
            client.get_resource(path)
    else:
        with pytest.raises(ValueError, match="repo/type/tag"):
            client.get_resource(path)
