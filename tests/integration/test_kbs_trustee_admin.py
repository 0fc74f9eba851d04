"""Administering ``arca kbs serve`` as Trustee users do, byte for byte.

Reproduced upstream behaviour:

* ``tools/kbs-client/src/lib.rs`` (Trustee, before commit e908c2d1 which moved minting out of
  the client): ``sign_admin_token`` — jsonwebtoken ``Header::new(EdDSA)`` =
  ``{"typ":"JWT","alg":"EdDSA"}``, claims ``{"exp": now + 7200, "iat": now}``
  (``ADMIN_TOKEN_EXPIRY_SECS``);
* ``integration-tests/src/common.rs`` (Trustee): ``{"iss","role","aud":[...],"iat","exp":
  now + 7200}``;
* ``kbs/config/docker-compose/setup.sh`` (Trustee): a ten-year admin token
  ``{"iss":"TrusteeInDocker","sub":"admin","aud":["KBS"],"role":"admin","iat","exp"}``;
* ``tools/kbs-client/src/lib.rs`` (current): ``set_resource`` (octet-stream body),
  ``delete_resource``, ``set_resource_policy`` / ``set_attestation_policy`` (URL-safe base64
  without padding, ``policy_id`` ``default_cpu``), ``set_sample_rv`` (RVPS message
  ``{"version":"0.1.0","type":"sample","payload": base64 of {name: [value]}}``), ``get_rv``;
  ``User-Agent: kbs-client/<version>``;
* ``kbs/config/docker-compose/kbs-config.toml`` and ``kbs/src/config.rs`` (Trustee): the
  configuration file ``arca kbs serve --config`` accepts.
"""

from __future__ import annotations

import base64
import http.client
import json
import pathlib
import subprocess
import sys
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from arca.kbs.tokens import b64u
from tests.support.kbs import admin_keypair, running_kbs
from tests.support.registry import free_port

pytestmark = pytest.mark.integration
UA = "kbs-client/0.1.0"


def _token(key: ed25519.Ed25519PrivateKey, header: bytes, claims: bytes) -> str:
    signing_input = f"{b64u(header)}.{b64u(claims)}"
    return f"{signing_input}.{b64u(key.sign(signing_input.encode()))}"


def kbs_client_token(key: ed25519.Ed25519PrivateKey) -> str:
    now = int(time.time())
    return _token(key, b'{"typ":"JWT","alg":"EdDSA"}',
                  f'{{"exp":{now + 7200},"iat":{now}}}'.encode())


def compose_token(key: ed25519.Ed25519PrivateKey, lifetime: int = 315360000) -> str:
    iat = int(time.time())
    return _token(key, b'{"alg":"EdDSA","typ":"JWT"}',
                  f'{{"iss":"TrusteeInDocker","sub":"admin","aud":["KBS"],"role":"admin",'
                  f'"iat":{iat},"exp":{iat + lifetime}}}'.encode())


def call(url: str, method: str, path: str, token: str | None, body: bytes | None = None,
         content_type: str | None = None) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"user-agent": UA, "accept": "*/*"}
    if content_type:
        headers["content-type"] = content_type
    if token:
        headers["authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def test_kbs_client_admin_calls(tmp_path):
    key, pub = admin_keypair(tmp_path)
    with running_kbs(tmp_path / "data", "--admin-public-key", str(pub)) as kbs:
        tok = kbs_client_token(key)  # two hours: accepted with the default bound
        assert call(kbs.url, "POST", "/kbs/v0/resource/alice/key/example", tok, b"\0secret\xff",
                    "application/octet-stream")[0] == 200
        status, body = call(kbs.url, "GET", "/kbs/v0/resource/alice/key/example", tok)
        assert (status, body) == (200, b"\0secret\xff")
        policy = b"package policy\n\nimport rego.v1\n\ndefault allow := false\n"
        assert call(kbs.url, "POST", "/kbs/v0/resource-policy", tok,
                    _json({"policy": base64.urlsafe_b64encode(policy).decode().rstrip("=")}),
                    "application/json")[0] == 200
        att = (pathlib.Path(__file__).parents[2] / "src/arca/kbs/policies/attestation.rego"
               ).read_bytes()
        status, body = call(kbs.url, "POST", "/kbs/v0/attestation-policy", tok, _json(
            {"type": "rego", "policy_id": "default_cpu",
             "policy": base64.urlsafe_b64encode(att).decode().rstrip("=")}), "application/json")
        assert status == 200, body
        # set-sample-reference-value svn 1  → {"svn": ["1"]}; serde_json's map sorts the keys
        payload = base64.b64encode(json.dumps({"sample.svn": ["1"]},
                                              separators=(",", ":")).encode()).decode()
        msg = _json({"payload": payload, "type": "sample", "version": "0.1.0"})
        status, body = call(kbs.url, "POST", "/kbs/v0/reference-value", tok, msg,
                            "application/json")
        assert status == 200, body
        status, body = call(kbs.url, "GET", "/kbs/v0/reference-value/sample.svn", tok,
                            content_type="application/json")
        assert (status, json.loads(body)) == (200, ["1"])
        # --as-single-value gives a bare string; --as-integer a number, which Arca refuses
        one = base64.b64encode(b'{"tdx.mr_td":"ab"}').decode()
        assert call(kbs.url, "POST", "/kbs/v0/reference-value", tok,
                    _json({"payload": one, "type": "sample", "version": "0.1.0"}),
                    "application/json")[0] == 200
        assert json.loads(call(kbs.url, "GET", "/kbs/v0/reference-value/tdx.mr_td", tok)[1]
                          ) == ["ab"]
        for bad in ({"payload": base64.b64encode(b'{"svn":[1]}').decode(), "type": "sample",
                     "version": "0.1.0"},
                    {"payload": payload, "type": "in-toto", "version": "0.1.0"},
                    {"payload": "%%%", "type": "sample", "version": "0.1.0"}):
            status, body = call(kbs.url, "POST", "/kbs/v0/reference-value", tok, _json(bad),
                                "application/json")
            assert status == 400 and json.loads(body)["type"].endswith("/SerdeError"), body
        assert call(kbs.url, "GET", "/kbs/v0/reference-value/none", tok)[0] == 404
        # one bad entry refuses the whole message: nothing of it is stored (red team: the
        # entries before it were, half a registration)
        half = base64.b64encode(b'{"tdx.half":"1","bad name!":"2"}').decode()
        status, body = call(kbs.url, "POST", "/kbs/v0/reference-value", tok,
                            _json({"payload": half, "type": "sample", "version": "0.1.0"}),
                            "application/json")
        assert status == 400, body
        assert call(kbs.url, "GET", "/kbs/v0/reference-value/tdx.half", tok)[0] == 404
        assert call(kbs.url, "DELETE", "/kbs/v0/resource/alice/key/example", tok)[0] == 200
        assert call(kbs.url, "GET", "/kbs/v0/resource/alice/key/example", tok)[0] == 404
        # anonymous, as kbs-client sends without a token file: refused
        assert call(kbs.url, "POST", "/kbs/v0/resource/alice/key/x", None, b"x",
                    "application/octet-stream")[0] == 401
        # the docker-compose ten-year token: refused by the default two-hour bound
        status, body = call(kbs.url, "GET", "/kbs/v0/resource-policy", compose_token(key))
        assert status == 401 and "longest accepted lifetime" in json.loads(body)["detail"]


def test_trustee_config_file_with_compose_admin_token(tmp_path):
    key, pub = admin_keypair(tmp_path)
    port = free_port()
    storage = tmp_path / "storage"
    cfg = tmp_path / "kbs-config.toml"
    cfg.write_text(f"""
[http_server]
sockets = ["127.0.0.1:{port}"]
insecure_http = true

[attestation_token]

[attestation_service]
type = "coco_as_builtin"

[attestation_service.attestation_token_broker]
duration_min = 5

[attestation_service.rvps_config]
type = "BuiltIn"

[admin]
authorization_mode = "AuthenticatedAuthorization"

[admin.authentication.bearer_jwt]
identity_providers = [
    {{ issuer = "TrusteeInDocker", public_key_uri = "{pub}" }},
]

[admin.authorization.regex_acl]
acls = [{{ role = "admin", allowed_endpoints = "^/kbs/.+$" }}]

[[plugins]]
name = "resource"
storage_backend_type = "kvstorage"

[storage_backend]
storage_type = "LocalFs"

[storage_backend.backends.local_fs]
dir_path = "{storage}"

[arca]
admin_token_max_lifetime = 315360000
""")
    proc = subprocess.Popen([sys.executable, "-m", "arca.cli.main", "kbs", "serve", "--config",
                             str(cfg)], stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        from arca._internal.net import wait_until_serving

        wait_until_serving(proc, "127.0.0.1", port, what="arca kbs serve", timeout=30)
        assert (storage / "kbs.db").exists()  # LocalFs dir_path is the data directory
        tok = compose_token(key)
        assert call(url, "POST", "/kbs/v0/resource/a/b/c", tok, b"v",
                    "application/octet-stream")[0] == 200
        # another issuer, or a role the ACL does not name: refused
        iat = int(time.time())
        other = _token(key, b'{"alg":"EdDSA","typ":"JWT"}',
                       f'{{"iss":"x","role":"admin","iat":{iat},"exp":{iat + 60}}}'.encode())
        viewer = _token(key, b'{"alg":"EdDSA","typ":"JWT"}',
                        f'{{"iss":"TrusteeInDocker","role":"viewer","iat":{iat},'
                        f'"exp":{iat + 60}}}'.encode())
        for bad in (other, viewer):
            assert call(url, "GET", "/kbs/v0/resource/a/b/c", bad)[0] == 401
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"listening on http://127.0.0.1:{port}" in err, err


@pytest.mark.parametrize("text,key", [
    ('[http_server]\ninsecure_http = true\ntls_profile = "modern"\n', "http_server.tls_profile"),
    ('[admin]\nauthorization_mode = "InsecureAllowAll"\n', "admin.authorization_mode"),
    ('[attestation_service]\ntype = "coco_as_grpc"\n', "attestation_service.type"),
    ('[attestation_token]\ninsecure_header_jwk = true\n', "attestation_token.insecure_header_jwk"),
    ('[storage_backend]\nstorage_type = "Memory"\n', "storage_backend.storage_type"),
    ('[[plugins]]\nname = "nebula-ca"\n', "plugins[0]"),
    ('[http_server]\nsockets = ["127.0.0.1:1", "127.0.0.1:2"]\n', "http_server.sockets"),
])
def test_trustee_config_unsupported_key_is_one_clear_line(tmp_path, text, key):
    cfg = tmp_path / "kbs-config.toml"
    cfg.write_text(text)
    out = subprocess.run([sys.executable, "-m", "arca.cli.main", "kbs", "serve", "--config",
                          str(cfg), "--data-dir", str(tmp_path / "d")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and key in lines[0] and "Traceback" not in out.stderr, out.stderr


def _release(url: str, key: ed25519.Ed25519PrivateKey, tok: str, policy: bytes,
             svn_reference: bool) -> int:
    """Set ``policy`` as kbs-client does, then a CoCo sample guest asks for the resource."""
    from tests.integration.test_kbs_coco_guest import CocoGuest

    assert call(url, "POST", "/kbs/v0/resource-policy", tok,
                _json({"policy": base64.urlsafe_b64encode(policy).decode().rstrip("=")}),
                "application/json")[0] == 200
    values = ["1"] if svn_reference else ["2"]
    assert call(url, "POST", "/kbs/v0/reference-values", tok,
                _json({"name": "sample.svn", "values": values}), "application/json")[0] == 200
    guest = CocoGuest(url, "sample")
    nonce = str(guest.auth()["nonce"])
    digest = guest.runtime_data_digest(nonce)
    status, _ = guest.attest(nonce, {"svn": "1",
                                     "report_data": base64.b64encode(digest).decode()})
    assert status == 200  # one worker: the admin change is in force at once (CACHE_SECONDS)
    return guest.request("GET", "/kbs/v0/resource/alice/key/x")[0]


def test_kbs_client_builtin_resource_policies(tmp_path):
    """``kbs-client config set-resource-policy --allow-all / --deny-all / --affirming``
    (``tools/kbs-client/src/main.rs``) send Trustee's ``kbs/sample_policies/*.rego``; policies
    of the same meaning (our own text) decide the same on Arca: allow-all tests
    ``data.plugin == "resource"``, affirming tests every ``input.submods`` status."""
    key, pub = admin_keypair(tmp_path)
    allow_all = (b'package policy\n\ndefault allow = false\n\nallow if {\n'
                 b'\tdata.plugin == "resource"\n}\n')
    deny_all = b"package policy\n\ndefault allow = false\n"
    affirming = (b"package policy\nimport rego.v1\n\ndefault allow = false\n\n"
                 b"allow if {\n    count(input.submods) > 0\n"
                 b"    every _, m in input.submods { m[\"ear.status\"] == \"affirming\" }\n}\n")
    with running_kbs(tmp_path / "data", "--admin-public-key", str(pub),
                     "--insecure-allow-sample") as kbs:
        tok = kbs_client_token(key)
        assert call(kbs.url, "POST", "/kbs/v0/resource/alice/key/x", tok, b"v",
                    "application/octet-stream")[0] == 200
        assert _release(kbs.url, key, tok, allow_all, svn_reference=False) == 200
        assert _release(kbs.url, key, tok, deny_all, svn_reference=True) == 403
        assert _release(kbs.url, key, tok, affirming, svn_reference=True) == 200
        assert _release(kbs.url, key, tok, affirming, svn_reference=False) == 403


def test_an_empty_trustee_acl_lets_no_admin_token_in(tmp_path):
    """Red team: a Trustee config whose regex ACL lists no rule (an operator locking the admin
    API, or one who has not granted any role yet). Trustee's ``RegexAclAuthorizer`` allows
    only what a rule matches, so nothing; Arca read the empty list as "no ACL" and let every
    token of the admin key replace the resource policy — then any evidence gets the secrets."""
    key, pub = admin_keypair(tmp_path)
    port = free_port()
    cfg = tmp_path / "kbs-config.toml"
    cfg.write_text(f"""
[http_server]
sockets = ["127.0.0.1:{port}"]
insecure_http = true

[admin]
authorization_mode = "AuthenticatedAuthorization"

[admin.authentication.bearer_jwt]
identity_providers = [{{ issuer = "TrusteeInDocker", public_key_uri = "{pub}" }}]

[admin.authorization.regex_acl]
acls = []

[storage_backend.backends.local_fs]
dir_path = "{tmp_path / 'storage'}"
""")
    proc = subprocess.Popen([sys.executable, "-m", "arca.cli.main", "kbs", "serve", "--config",
                             str(cfg)], stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        from arca._internal.net import wait_until_serving

        wait_until_serving(proc, "127.0.0.1", port, what="arca kbs serve", timeout=30)
        tok = compose_token(key, lifetime=600)
        allow_all = base64.urlsafe_b64encode(b"package policy\ndefault allow := true\n")
        for method, path, body in (
                ("POST", "/kbs/v0/resource-policy", _json({"policy": allow_all.decode()})),
                ("POST", "/kbs/v0/resource/a/b/c", b"planted"),
                ("GET", "/kbs/v0/resource-policy", None)):
            status, answer = call(url, method, path, tok, body, "application/json")
            assert status == 401, (path, answer)
            assert "may not call" in json.loads(answer)["detail"], answer
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
