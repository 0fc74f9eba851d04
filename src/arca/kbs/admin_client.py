"""Client of the KBS admin API (used by ``arca kbs admin``): mints a short-lived EdDSA admin
token per request from the admin private key and maps problem answers to Arca errors."""

from __future__ import annotations

import base64
import pathlib
import ssl
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from arca.kbs.tokens import make_admin_token
from arca.wire.errors import ArcaError, BrokerUnavailable, ConfigError, NotFound, PolicyDenied

#: Admin tokens live this long: enough for one request, useless if captured later.
ADMIN_TOKEN_LIFETIME = 60


def keygen(prefix: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Write an Ed25519 admin key pair: ``PREFIX.key`` (private, 0600) and ``PREFIX.pub``."""
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


def load_admin_private_key(path: pathlib.Path) -> ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"admin key {path}: {e}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"admin key {path} is not an Ed25519 private key")
    return key


class AdminClient:
    def __init__(self, url: str, key: ed25519.Ed25519PrivateKey, *,
                 cacert: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        verify: ssl.SSLContext | bool = True
        if cacert:
            try:
                verify = ssl.create_default_context(cafile=cacert)
            except OSError as e:
                raise ConfigError(f"CA file {cacert}: {e}") from None
        self.http = httpx.Client(verify=verify, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, *, headers: dict[str, str] | None = None,
              **kw: Any) -> httpx.Response:
        token = make_admin_token(self.key, lifetime=ADMIN_TOKEN_LIFETIME)
        try:
            r = self.http.request(method, self.url + path,
                                  headers={**(headers or {}), "Authorization": f"Bearer {token}"},
                                  **kw)
        except httpx.HTTPError as e:
            raise BrokerUnavailable(f"KBS {self.url} unreachable: {e}") from None
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
        body: dict[str, Any] = {"policy": base64.b64encode(text.encode()).decode()}
        if kind == "attestation":
            body.update(type="rego", policy_id="default")
        self._call("POST", f"/kbs/v0/{kind}-policy", json=body)

    def get_policy(self, kind: str) -> str:
        return base64.b64decode(self._call("GET", f"/kbs/v0/{kind}-policy").json()["policy"]
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
