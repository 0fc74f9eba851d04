"""A Trustee KBS configuration file (``kbs-config.toml``) read as Arca settings.

What it does: maps the keys of Trustee's ``kbs/src/config.rs`` (and the sections it embeds:
``kbs/src/admin/mod.rs``, ``admin/authentication/bearer_jwt.rs``,
``admin/authorization/regex_acl.rs``, the attestation-service and storage configs) that mean
the same thing in Arca onto :class:`arca.kbs.config.KbsConfig` field names. Any other key, or
a value Arca cannot honour with the same meaning, is refused with one line naming it. The
mapping table is in docs/kbs.md. Arca's own settings may sit in an ``[arca]`` table (Trustee
ignores unknown top-level tables), e.g. ``trust_sim_root`` or ``collateral``.

What it does not do: emulate what Arca does not have (external attestation services, Vault,
other plugins, TLS profiles, anonymous admin access).
"""

from __future__ import annotations

from typing import Any

from arca.wire.errors import ConfigError

#: Top-level keys of Trustee's ``KbsConfig``: a file with any of them is a Trustee file.
TRUSTEE_KEYS = frozenset({"http_server", "admin", "attestation_token", "attestation_service",
                          "storage_backend", "session_storage_type", "plugins"})


def is_trustee(doc: dict[str, Any]) -> bool:
    return bool(TRUSTEE_KEYS & set(doc))


class _Reader:
    """Takes keys out of a table; what is left at the end is unsupported."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, why: str) -> ConfigError:
        return ConfigError(f"config file {self.file}: Trustee key {key} {why}")

    def table(self, doc: dict[str, Any], key: str) -> dict[str, Any]:
        value = doc.pop(key.rsplit(".", 1)[-1], {})
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table")
        return value

    def done(self, doc: dict[str, Any], prefix: str) -> None:
        if doc:
            key = f"{prefix}.{sorted(doc)[0]}" if prefix else sorted(doc)[0]
            raise self.fail(key, "is not supported by Arca (docs/kbs.md lists the mapping)")


def _path(uri: Any, r: _Reader, key: str) -> str:
    if not isinstance(uri, str) or uri.startswith(("http://", "https://")):
        raise r.fail(key, "must be a local path or file:// URI (Arca does not fetch keys)")
    return uri.removeprefix("file://")


def _http_server(t: dict[str, Any], r: _Reader, out: dict[str, Any]) -> None:
    sockets = t.pop("sockets", None)
    if sockets is not None:
        if not isinstance(sockets, list) or len(sockets) != 1 or not isinstance(sockets[0], str):
            raise r.fail("http_server.sockets", "must list exactly one HOST:PORT "
                         "(Arca listens on one socket)")
        out["listen"] = sockets[0]
    for key, name in (("insecure_http", "insecure_http"), ("private_key", "tls_key"),
                      ("certificate", "tls_cert"), ("worker_count", "workers")):
        if key in t:
            out[name] = t.pop(key)
    r.done(t, "http_server")


def _admin(t: dict[str, Any], r: _Reader, out: dict[str, Any]) -> None:
    mode = t.pop("authorization_mode", "InsecureAllowAll")  # Trustee's default
    if mode == "DenyAll":
        out["admin_public_key"] = None
    elif mode != "AuthenticatedAuthorization":
        raise r.fail("admin.authorization_mode", f"= {mode!r} is not supported (Arca's admin "
                     "API always authenticates: use AuthenticatedAuthorization or DenyAll)")
    else:
        authn = r.table(t, "admin.authentication")
        jwt = r.table(authn, "admin.authentication.bearer_jwt")
        idps = jwt.pop("identity_providers", [])
        if not isinstance(idps, list) or len(idps) != 1 or not isinstance(idps[0], dict):
            raise r.fail("admin.authentication.bearer_jwt.identity_providers",
                         "must have exactly one entry (Arca trusts one admin key)")
        idp = dict(idps[0])
        key = "admin.authentication.bearer_jwt.identity_providers[0]"
        if "public_key_uri" not in idp:
            raise r.fail(f"{key}.public_key_uri", "is required (Arca does not fetch JWKS)")
        out["admin_public_key"] = _path(idp.pop("public_key_uri"), r, f"{key}.public_key_uri")
        out["admin_token_issuer"] = idp.pop("issuer", None)
        out["admin_token_audience"] = idp.pop("audience", None)
        r.done(idp, key)
        r.done(jwt, "admin.authentication.bearer_jwt")
        r.done(authn, "admin.authentication")
        authz = r.table(t, "admin.authorization")
        configured = "regex_acl" in authz  # absent: no ACL (any valid admin token)
        acl = r.table(authz, "admin.authorization.regex_acl")
        acls = acl.pop("acls", [])
        if not isinstance(acls, list) or not all(
                isinstance(a, dict) and set(a) == {"role", "allowed_endpoints"}
                and all(isinstance(v, str) for v in a.values()) for a in acls):
            raise r.fail("admin.authorization.regex_acl.acls",
                         "must be a list of {role, allowed_endpoints} strings")
        for a in acls:  # as Trustee's RegexAclAuthorizer: anchored, else refused
            rx = a["allowed_endpoints"]
            if not (rx.startswith("^/kbs") and rx.endswith("$")) or not _compiles(rx):
                raise r.fail("admin.authorization.regex_acl.acls", f"allowed_endpoints "
                             f"{rx[:80]!r} must be a regular expression anchored as "
                             "^/kbs...$ (Trustee refuses unanchored ones)")
        # Kept even when empty: Trustee's ACL then allows no admin call, and so does Arca's.
        if configured:
            out["admin_acls"] = tuple((a["role"], a["allowed_endpoints"]) for a in acls)
        r.done(acl, "admin.authorization.regex_acl")
        r.done(authz, "admin.authorization")
    r.done(t, "admin")


def _compiles(rx: str) -> bool:
    import re

    try:
        re.compile(rx)
    except re.error:
        return False
    return True


def _attestation_service(t: dict[str, Any], r: _Reader, out: dict[str, Any]) -> None:
    kind = t.pop("type", "coco_as_builtin")
    if kind != "coco_as_builtin":
        raise r.fail("attestation_service.type", f"= {kind!r} is not supported (Arca "
                     "verifies evidence itself: coco_as_builtin)")
    broker = r.table(t, "attestation_service.attestation_token_broker")
    if "duration_min" in broker:
        minutes = broker.pop("duration_min")
        if type(minutes) is not int or minutes <= 0:
            raise r.fail("attestation_service.attestation_token_broker.duration_min",
                         "must be a positive integer")
        out["token_lifetime"] = minutes * 60
    r.done(broker, "attestation_service.attestation_token_broker")
    rvps = r.table(t, "attestation_service.rvps_config")
    if rvps.pop("type", "BuiltIn") != "BuiltIn":
        raise r.fail("attestation_service.rvps_config.type", "must be BuiltIn (Arca keeps "
                     "reference values in its database)")
    r.done(rvps, "attestation_service.rvps_config")
    r.done(t, "attestation_service")


def _storage(t: dict[str, Any], r: _Reader, out: dict[str, Any]) -> None:
    kind = t.pop("storage_type", "LocalFs")
    backends = r.table(t, "storage_backend.backends")
    if kind != "LocalFs":
        raise r.fail("storage_backend.storage_type", f"= {kind!r} is not supported (LocalFs "
                     "maps to Arca's data directory; PostgreSQL: --db)")
    local = r.table(backends, "storage_backend.backends.local_fs")
    if "dir_path" in local:
        out["data_dir"] = local.pop("dir_path")
    r.done(local, "storage_backend.backends.local_fs")
    r.done(backends, "storage_backend.backends")
    r.done(t, "storage_backend")


def _plugins(value: Any, r: _Reader) -> None:
    if not isinstance(value, list):
        raise r.fail("plugins", "must be an array of tables")
    for i, plugin in enumerate(value):
        if plugin != {"name": "resource", "storage_backend_type": "kvstorage"}:
            raise r.fail(f"plugins[{i}]", "is not supported (Arca's one plugin is the "
                         "resource store: name = \"resource\", storage_backend_type = "
                         "\"kvstorage\")")


def settings(doc: dict[str, Any], file: str) -> dict[str, Any]:
    """Arca settings (``KbsConfig`` field names) from a parsed Trustee config file."""
    r = _Reader(file)
    doc = {k: (dict(v) if isinstance(v, dict) else v) for k, v in doc.items()}
    out: dict[str, Any] = {}
    _http_server(r.table(doc, "http_server"), r, out)
    if "admin" in doc:  # absent: Trustee allows anonymous admin calls, Arca uses its own
        _admin(r.table(doc, "admin"), r, out)
    token = r.table(doc, "attestation_token")
    r.done(token, "attestation_token")  # Arca verifies only the tokens it signs itself
    _attestation_service(r.table(doc, "attestation_service"), r, out)
    _storage(r.table(doc, "storage_backend"), r, out)
    if "plugins" in doc:
        _plugins(doc.pop("plugins"), r)
    arca = r.table(doc, "arca")
    r.done(doc, "")
    clash = set(arca) & set(out)
    if clash:
        raise ConfigError(f"config file {file}: [arca] {sorted(clash)[0]} is already set by "
                          "a Trustee key")
    return {**out, **arca}
