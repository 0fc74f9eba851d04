"""Schemathesis fuzzes the KBS's own OpenAPI document against a real server: no input, with or
without a valid admin token, may produce a 5xx. Bounded to stay around a minute."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arca.kbs.tokens import make_admin_token
from tests.support.kbs import sim_kbs

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SCHEMATHESIS = os.path.join(os.path.dirname(sys.executable), "schemathesis")


@pytest.mark.parametrize("as_admin", [False, True], ids=["anonymous", "admin"])
def test_openapi_fuzz_no_server_errors(tmp_path, as_admin):
    with sim_kbs(tmp_path, "--insecure-allow-sample") as (kbs, _, key):
        cmd = [SCHEMATHESIS, "run", f"{kbs.url}/openapi.json", "--checks", "not_a_server_error",
               "--max-examples", "100", "--seed", "4", "--request-timeout", "10",
               "--suppress-health-check", "all"]
        if as_admin:
            cmd += ["-H", f"Authorization: Bearer {make_admin_token(key, lifetime=3600)}"]
        # cwd: schemathesis keeps a cache directory there; keep it out of the repository
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                           env={**os.environ, "NO_COLOR": "1"})
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
        log = kbs.log.read_text()
        assert "Traceback" not in log, log[-3000:]


# -- hostile Unicode in every field and header (issue 13, item 11) ----------------------------
#
# Schemathesis serialises its strings as valid JSON in UTF-8, so it never sends what an
# attacker can: JSON escapes of lone UTF-16 surrogates, invalid UTF-8 (overlong forms, encoded
# surrogates, truncated sequences), NUL, or raw bytes >= 0x80 in headers. These tests splice
# such values into every field of every request body (keys too) and into the headers and the
# path, on raw sockets against a real server: the answer is always a 4xx RFC 7807 document.

#: Replacements for one JSON string literal (quotes included), as raw bytes on the wire, that
#: no valid request holds: lone surrogate escapes, invalid UTF-8 (overlong, encoded surrogate,
#: truncated, 0xFF), a raw NUL (control characters must be escaped in JSON).
MALFORMED_JSON = [
    b'"\\ud800"', b'"\\udfff"', b'"x\\udc00\\ud800y"', b'"\\ud83d"', b'"\xc0\xaf"',
    b'"\xe0\x80\xaf"', b'"\xed\xa0\x80"', b'"\xf0\x80\x80\xaf"', b'"\xff\xfe"', b'"\xe2\x82"',
    b'"\x00"',
]
#: Well-formed but unusual text: may be accepted where any string is, never a 5xx.
ODD_JSON = [b'"a\\u0000b"', b'"\xc3\xa9\xf0\x9f\x98\x80"', b'"\\ufeff\\u202e"', b'"\xef\xbb\xbf"',
            b'"\\ud83d\\ude00"']
#: Header values (raw bytes): non-ASCII, invalid UTF-8, overlong, lone-surrogate text.
HOSTILE_HEADER = [b"\xc3\xa9", b"\xc0\xaf", b"\xed\xa0\x80", b"\xff", b"\\ud800", b"\xe2\x82",
                  b"kbs-session-id=\xc0\xaf", b"Bearer \xed\xa0\x80.e30.AA", b"Bearer \xff",
                  b"a\x80b", b"%ED%A0%80", b"%C0%AF", b"%00"]
_HOLE = b"@@HOLE@@"


def _jwk() -> dict[str, str]:
    return {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW",
            "x": "gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0",
            "y": "SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps"}


def _templates(nonce: str) -> list[tuple[str, str, Any]]:
    """(method, path, JSON document) of every request with a JSON body."""
    attest = {"runtime-data": {"nonce": nonce, "tee-pubkey": _jwk()},
              "tee-evidence": {"primary_evidence": {"quote": "AA"}, "additional_evidence": ""},
              "init-data": {"format": "toml", "body": "version = \"0.1.0\""}}
    return [("POST", "/kbs/v0/auth", {"version": "0.4.0", "tee": "sim", "extra-params": {}}),
            ("POST", "/kbs/v0/attest", attest),
            ("POST", "/kbs/v0/reference-values", {"name": "sim.measurement", "values": ["ab"]}),
            ("POST", "/kbs/v0/resource-policy", {"policy": "cGFja2FnZSBwb2xpY3k="}),
            ("POST", "/kbs/v0/attestation-policy",
             {"type": "rego", "policy_id": "p", "policy": "cGFja2FnZSBwb2xpY3k="})]


def _slots(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    """Every string value ("v") and every object key ("k") of ``doc``, by path."""
    out: list[tuple[tuple[Any, ...], str]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append(((*path, k), "k"))
            out += _slots(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _slots(v, (*path, i))
    elif isinstance(doc, str):
        out.append((path, "v"))
    return out


def _splice(doc: Any, slot: tuple[tuple[Any, ...], str], value: bytes) -> bytes:
    """``doc`` as JSON with the string (or key) at ``slot`` replaced by raw ``value``."""
    doc = json.loads(json.dumps(doc))
    path, kind = slot
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    hole = _HOLE.decode()
    if kind == "k":
        parent[hole] = parent.pop(path[-1])
    else:
        parent[path[-1]] = hole
    return json.dumps(doc).encode().replace(b'"' + _HOLE + b'"', value)


def _raw(method: str, target: bytes, body: bytes | None, headers: list[bytes]) -> bytes:
    head = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: x", *headers]
    if body is not None:
        head += [b"Content-Type: application/json", b"Content-Length: %d" % len(body)]
    return b"\r\n".join(head) + b"\r\n\r\n" + (body or b"")


def _exchange(url: str, *requests: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    host, port = url.rsplit("/", 1)[1].split(":")
    answers = []
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        buf = b""
        for req in requests:
            sock.sendall(req)
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                assert chunk, "connection closed without an answer"
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            headers = {n.strip().lower(): v.strip() for n, _, v in
                       (line.partition(":") for line in lines[1:])}
            n = int(headers.get("content-length", "0"))
            while len(buf) < n:
                chunk = sock.recv(65536)
                assert chunk, "connection closed inside an answer"
                buf += chunk
            answers.append((int(lines[0].split()[1]), headers, buf[:n]))
            buf = buf[n:]
    return answers


def _is_problem(answer: tuple[int, dict[str, str], bytes], what: object) -> None:
    status, headers, body = answer
    assert 400 <= status < 500, (what, status, body[:300])
    assert headers.get("content-type") == "application/problem+json", (what, headers, body)
    doc = json.loads(body)
    assert set(doc) == {"type", "title", "status", "detail"} and doc["status"] == status, doc


@pytest.fixture(scope="module")
def unicode_kbs(tmp_path_factory: pytest.TempPathFactory):
    with sim_kbs(tmp_path_factory.mktemp("kbs-unicode"),
                 "--insecure-allow-sample") as (kbs, _, key):
        yield kbs, key


def _session(url: str) -> tuple[str, str]:
    """A fresh challenged session: (nonce, cookie header line)."""
    (status, headers, body), = _exchange(url, _raw(
        "POST", b"/kbs/v0/auth", json.dumps({"version": "0.4.0", "tee": "sim"}).encode(), []))
    assert status == 200, body
    return json.loads(body)["nonce"], "Cookie: " + headers["set-cookie"].split(";")[0]


def test_lone_surrogate_in_the_nonce_is_400_not_500(unicode_kbs):
    """The reported attack: ``runtime-data.nonce`` = the session's nonce + a lone surrogate
    made the KBS answer 500 (``str.encode`` in the nonce comparison)."""
    kbs, _ = unicode_kbs
    for suffix in (b"\\ud800", b"\\udfff", b""):
        nonce, cookie = _session(kbs.url)
        doc = _templates(nonce)[1][2]
        body = _splice(doc, ((("runtime-data", "nonce"), "v")),
                       b'"' + nonce.encode() + suffix + b'"') if suffix else None
        if body is None:  # control: a lone surrogate *alone* as the nonce
            body = _splice(doc, ((("runtime-data", "nonce"), "v")), b'"\\ud800"')
        answer, = _exchange(kbs.url, _raw("POST", b"/kbs/v0/attest", body, [cookie.encode()]))
        _is_problem(answer, suffix)
        assert answer[0] == 400 and json.loads(answer[2])["title"] == "SerdeError", answer
    assert "Traceback" not in kbs.log.read_text()


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_hostile_unicode_in_every_body_field_is_a_4xx_problem(unicode_kbs, data):
    kbs, key = unicode_kbs
    index = data.draw(st.integers(0, 4), label="request")
    nonce, cookie = _session(kbs.url) if index == 1 else ("n", "")
    method, path, doc = _templates(nonce)[index]
    slot = data.draw(st.sampled_from(_slots(doc)), label="slot")
    value = data.draw(st.sampled_from(MALFORMED_JSON + ODD_JSON), label="value")
    headers = [cookie.encode()] if cookie else []
    if index >= 2:
        headers.append(f"Authorization: Bearer {make_admin_token(key, lifetime=60)}".encode())
    answer, = _exchange(kbs.url, _raw(method, path.encode(), _splice(doc, slot, value), headers))
    if value in ODD_JSON and answer[0] < 300:
        return  # valid text in a field that takes any string (a reference value, a policy id)
    _is_problem(answer, (path, slot, value))


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(value=st.sampled_from(HOSTILE_HEADER),
       where=st.sampled_from(["cookie", "authorization", "content-type", "path", "x-extra"]),
       request=st.sampled_from(["auth", "attest", "resource", "admin", "delete"]))
def test_hostile_bytes_in_headers_and_path_are_a_4xx_problem(unicode_kbs, value, where,
                                                             request):
    kbs, _ = unicode_kbs
    method, target, body = {
        "auth": ("POST", b"/kbs/v0/auth", b'{"version": "0.4.0", "tee": "sim"}'),
        "attest": ("POST", b"/kbs/v0/attest", b"{}"),
        "resource": ("GET", b"/kbs/v0/resource/default/key/one", None),
        "admin": ("GET", b"/kbs/v0/resource-policy", None),
        "delete": ("DELETE", b"/kbs/v0/reference-values/sim.measurement", None)}[request]
    headers = []
    if where == "path":
        target = target.rsplit(b"/", 1)[0] + b"/" + value.replace(b" ", b"")
    elif where == "cookie":
        headers.append(b"Cookie: kbs-session-id=" + value)
    else:
        headers.append(where.encode() + b": " + value)
    raw = _raw(method, target, body, headers)
    if where == "content-type":  # replace the one _raw adds
        raw = raw.replace(b"Content-Type: application/json\r\n", b"")
    answer, = _exchange(kbs.url, raw)
    status = answer[0]
    if request == "auth" and where != "path":
        assert status == 200, answer  # headers auth does not read change nothing
        return
    _is_problem(answer, (where, value, request))
