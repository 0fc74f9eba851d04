"""Client of the KBS admin API (used by ``arca kbs admin``): mints a short-lived EdDSA admin
token per request from the admin private key and maps problem answers to Arca errors.

``arca kbs admin`` is typed often (issue 15: start-up ≤ 80 ms), so this module imports only
``socket`` (``ssl`` for https) and cryptography's Ed25519: no httpx (~0.5 s with its
dependencies), no ``http.client`` (~40 ms: it loads the email parser) and no
``cryptography...serialization`` (it loads every key format). One request per connection
(``Connection: close``), as the CLI makes one or a few calls; :mod:`arca.kbs.admin_http` has
the HTTP/1.1 framing.
"""

from __future__ import annotations

import binascii
import time

from arca._internal.fastjson import json_dumps
from arca.kbs.admin_http import HttpError, Response, request
from arca.wire.errors import ArcaError, BrokerUnavailable, ConfigError, NotFound, PolicyDenied

TYPE_CHECKING = False  # typing, pathlib (urllib, re) and json: ~30 ms of every admin command
if TYPE_CHECKING:
    import pathlib
    import ssl
    from os import PathLike
    from typing import Any

    from cryptography.hazmat.primitives.asymmetric import ed25519

#: Admin tokens live this long: enough for one request, useless if captured later.
ADMIN_TOKEN_LIFETIME = 60
#: DER of a PKCS#8 Ed25519 private key (RFC 8410) before its 32-byte seed: every such key
#: (ours, openssl genpkey -algorithm ed25519) is this prefix + seed, 48 bytes in all.
_PKCS8_ED25519 = bytes.fromhex("302e020100300506032b657004220420")
_URLSAFE = bytes.maketrans(b"+/", b"-_")
_PEM_BEGIN, _PEM_END = "-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----"


def keygen(prefix: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Write an Ed25519 admin key pair: ``PREFIX.key`` (private, 0600) and ``PREFIX.pub``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    priv, pub = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    if not priv.parent.is_dir():
        raise ConfigError(f"cannot write admin key {priv}: directory {priv.parent} does not "
                          "exist")
    for path in (priv, pub):
        if path.exists():
            raise ConfigError(f"{path} exists; refusing to overwrite a key")
    priv.touch(mode=0o600)
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def load_admin_private_key(path: str | PathLike[str]) -> ed25519.Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:  # "admin key k.pem: No such file or directory", not "[Errno 2] ..."
        raise ConfigError(f"admin key {path}: {e.strerror or e}") from None
    seed = _pkcs8_seed(data)
    if seed is not None:
        return ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    # any other encoding: cryptography's loader, with its own error message
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(data, None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"admin key {path}: {e}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"admin key {path} is not an Ed25519 private key")
    return key


def _pkcs8_seed(pem: bytes) -> bytes | None:
    """The seed of an unencrypted PKCS#8 Ed25519 PEM key; None for anything else."""
    text = pem.decode("ascii", errors="replace").strip()
    if not (text.startswith(_PEM_BEGIN) and text.endswith(_PEM_END)):
        return None
    try:
        der = binascii.a2b_base64(text[len(_PEM_BEGIN):-len(_PEM_END)])
    except binascii.Error:
        return None
    if len(der) != 48 or not der.startswith(_PKCS8_ED25519):
        return None
    return der[16:]


def _b64u(data: bytes) -> str:
    # binascii, not base64 (which imports re: ~10 ms of every `arca kbs admin`)
    return binascii.b2a_base64(data, newline=False).rstrip(b"=").translate(_URLSAFE).decode()


def admin_token(key: ed25519.Ed25519PrivateKey, lifetime: int = ADMIN_TOKEN_LIFETIME,
                now: float | None = None) -> str:
    """An EdDSA admin token: ``iat`` now, ``exp`` after ``lifetime`` seconds (the KBS checks
    it with :func:`arca.kbs.tokens.verify_admin`)."""
    t = int(time.time() if now is None else now)
    head = _b64u(b'{"alg":"EdDSA","typ":"JWT"}')
    body = _b64u(f'{{"exp":{t + lifetime},"iat":{t}}}'.encode())
    signing_input = f"{head}.{body}"
    return f"{signing_input}.{_b64u(key.sign(signing_input.encode()))}"


class AdminClient:
    def __init__(self, url: str, key: ed25519.Ed25519PrivateKey, *,
                 cacert: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout
        self._tls: ssl.SSLContext | None = None
        if self.url.startswith("https://"):
            import ssl

            try:
                self._tls = ssl.create_default_context(cafile=cacert)
            except OSError as e:
                raise ConfigError(f"CA file {cacert}: {e}") from None
        elif not self.url.startswith("http://"):
            raise ConfigError(f"KBS URL {url!r} must be http:// or https://")

    def close(self) -> None:
        pass  # one connection per request, closed by it

    def _call(self, method: str, path: str, *, headers: dict[str, str] | None = None,
              content: bytes | None = None, json: Any = None) -> Response:
        token = admin_token(self.key)
        hdrs = {**(headers or {}), "Authorization": f"Bearer {token}"}
        if json is not None:
            content = json_dumps(json).encode()
            hdrs["Content-Type"] = "application/json"
        try:
            r = request(method, self.url + path, hdrs, content, timeout=self.timeout,
                        tls=self._tls)
        except (OSError, HttpError) as e:
            # "Connection refused", not "[Errno 111] Connection refused"
            why = e.strerror if isinstance(e, OSError) and e.strerror else e
            raise BrokerUnavailable(f"KBS {self.url} unreachable: {why}") from None
        if r.status_code < 300:
            return r
        try:
            body = r.json()
            detail = f"{str(body.get('type', '')).rsplit('/', 1)[-1]}: {body.get('detail', '')}"
        except (ValueError, AttributeError):
            detail = r.text[:300]
        msg = f"KBS {self.url} refused {method} {path}: {r.status_code} {detail}"
        if r.status_code in (401, 403):
            raise PolicyDenied(msg)
        if r.status_code == 404:
            raise NotFound(msg)
        if r.status_code >= 500:
            raise BrokerUnavailable(msg)
        raise ArcaError(msg)

    def set_resource(self, path: str, data: bytes) -> None:
        self._call("POST", f"/kbs/v0/resource/{path}", content=data,
                   headers={"Content-Type": "application/octet-stream"})

    def get_resource(self, path: str) -> bytes:
        return self._call("GET", f"/kbs/v0/resource/{path}").content

    def delete_resource(self, path: str) -> None:
        self._call("DELETE", f"/kbs/v0/resource/{path}")

    def set_policy(self, kind: str, text: str) -> None:
        body: dict[str, Any] = {
            "policy": binascii.b2a_base64(text.encode(), newline=False).decode()}
        if kind == "attestation":
            body.update(type="rego", policy_id="default")
        self._call("POST", f"/kbs/v0/{kind}-policy", json=body)

    def get_policy(self, kind: str) -> str:
        return binascii.a2b_base64(self._call("GET", f"/kbs/v0/{kind}-policy").json()["policy"]
                                ).decode()

    def set_reference_value(self, name: str, values: list[str]) -> None:
        self._call("POST", "/kbs/v0/reference-values", json={"name": name, "values": values})

    def set_reference_values(self, values: object) -> list[str]:
        """Set each ``NAME -> [VALUE...]`` of ``values`` (the reference-values.json that
        ``arca policy generate`` writes), all checked before the first is sent; the names."""
        if not isinstance(values, dict) or not all(
                isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
                for k, v in values.items()):
            raise ConfigError("reference values must be a JSON object of NAME: [VALUE, ...]")
        for name, vals in values.items():
            self.set_reference_value(name, vals)
        return list(values)

    def get_reference_values(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = self._call("GET", "/kbs/v0/reference-values").json()
        return out
