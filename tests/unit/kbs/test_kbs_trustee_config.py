"""A Trustee ``kbs-config.toml`` read as Arca settings (``arca.kbs.trustee_config``): each key
that means the same thing maps, every other key is refused by name.

Upstream reproduced: Trustee ``kbs/src/config.rs`` (``HttpServerConfig``, ``KbsConfig``),
``kbs/src/admin/mod.rs`` (``authorization_mode``), ``kbs/src/admin/authentication/
bearer_jwt.rs`` (``identity_providers``), ``kbs/src/admin/authorization/regex_acl.rs``,
``kbs/config/kbs-config.toml`` and ``kbs/config/docker-compose/kbs-config.toml``.
"""

from __future__ import annotations

import pathlib

import pytest

from arca.kbs import config as kbs_config
from arca.wire.errors import ConfigError


def _load(tmp_path: pathlib.Path, text: str, **overrides: object) -> kbs_config.KbsConfig:
    f = tmp_path / "kbs-config.toml"
    f.write_text(text)
    return kbs_config.load(str(f), dict(overrides))


def test_http_server_and_storage_keys(tmp_path):
    cfg = _load(tmp_path, """
[http_server]
sockets = ["0.0.0.0:8443"]
insecure_http = false
private_key = "/etc/kbs/tls.key"
certificate = "/etc/kbs/tls.crt"
worker_count = 3

[attestation_service.attestation_token_broker]
duration_min = 7

[storage_backend]
storage_type = "LocalFs"

[storage_backend.backends.local_fs]
dir_path = "/var/lib/kbs"
""")
    assert (cfg.listen, cfg.insecure_http, cfg.tls_key, cfg.tls_cert, cfg.workers) == (
        "0.0.0.0:8443", False, "/etc/kbs/tls.key", "/etc/kbs/tls.crt", 3)
    assert cfg.token_lifetime == 420 and cfg.data_dir == "/var/lib/kbs"


def test_admin_modes(tmp_path):
    cfg = _load(tmp_path, '[admin]\nauthorization_mode = "DenyAll"\n', data_dir="/d",
                admin_public_key=None)
    assert cfg.admin_public_key is None
    cfg = _load(tmp_path, """
[admin]
authorization_mode = "AuthenticatedAuthorization"
[admin.authentication.bearer_jwt]
identity_providers = [{ issuer = "i", audience = "KBS", public_key_uri = "file:///k.pub" }]
[admin.authorization.regex_acl]
acls = [{ role = "admin", allowed_endpoints = "^/kbs/.+$" }]
""", data_dir="/d")
    assert (cfg.admin_public_key, cfg.admin_token_issuer, cfg.admin_token_audience) == (
        "/k.pub", "i", "KBS")
    assert cfg.admin_acls == (("admin", "^/kbs/.+$"),)
    assert kbs_config.KbsConfig.from_json(cfg.to_json()) == cfg  # to another process and back


def test_arca_table_and_cli_overrides(tmp_path):
    cfg = _load(tmp_path, '[http_server]\ninsecure_http = true\n[arca]\n'
                'trust_sim_root = ["/r.pem"]\ndata_dir = "/a"\n', listen="127.0.0.1:1")
    assert cfg.trust_sim_root == ("/r.pem",) and cfg.data_dir == "/a"
    assert cfg.listen == "127.0.0.1:1"  # the command line wins
    with pytest.raises(ConfigError, match=r"\[arca\] data_dir is already set"):
        _load(tmp_path, '[storage_backend.backends.local_fs]\ndir_path = "/x"\n'
                        '[arca]\ndata_dir = "/y"\n')


_AUTHN = ('[admin]\nauthorization_mode = "AuthenticatedAuthorization"\n'
          '[admin.authentication.bearer_jwt]\n'
          'identity_providers = [{ public_key_uri = "/k.pub" }]\n')


def test_an_acl_is_kept_even_empty_and_only_without_one_is_there_none(tmp_path):
    """Trustee's regex ACL allows only what one of its rules matches: an empty list allows no
    admin call. Read as "no ACL", it let every valid admin token do everything (red team)."""
    empty = _load(tmp_path, _AUTHN + "[admin.authorization.regex_acl]\nacls = []\n",
                  data_dir="/d")
    assert empty.admin_acls == ()
    assert kbs_config.KbsConfig.from_json(empty.to_json()).admin_acls == ()
    assert _load(tmp_path, _AUTHN, data_dir="/d").admin_acls is None


@pytest.mark.parametrize("rx", ["/kbs/v0/resource/a/.+", "^/kbs/v0/resource/a/", "^/kbs/(+$",
                                ".*/kbs/v0/resource/a/.+$"])
def test_an_unanchored_or_broken_acl_regex_is_refused(tmp_path, rx):
    text = (_AUTHN + "[admin.authorization.regex_acl]\n"
            f"acls = [{{ role = \"r\", allowed_endpoints = '{rx}' }}]\n")
    with pytest.raises(ConfigError, match="anchored as"):
        _load(tmp_path, text, data_dir="/d")


@pytest.mark.parametrize("text,key", [
    ('[admin]\nauthorization_mode = "AuthenticatedAuthorization"\n'
     '[admin.authentication.bearer_jwt]\nidentity_providers = [{ jwk_set_uri = "https://x" }]\n',
     "public_key_uri"),
    ('[admin]\nauthorization_mode = "AuthenticatedAuthorization"\n'
     '[admin.authentication.bearer_jwt]\n'
     'identity_providers = [{ public_key_uri = "https://idp/key.pem" }]\n', "public_key_uri"),
    ('[admin]\nauthorization_mode = "AuthenticatedAuthorization"\n'
     '[admin.authentication.bearer_jwt]\nidentity_providers = [{ public_key_uri = "/a" }, '
     '{ public_key_uri = "/b" }]\n', "identity_providers"),
    ('[http_server]\npayload_request_size = 4\n', "http_server.payload_request_size"),
    ('session_storage_type = "Memory"\n', "session_storage_type"),
    ('[attestation_service]\ntype = "intel_ta"\n', "attestation_service.type"),
    ('[attestation_service.rvps_config]\ntype = "GrpcRemote"\n', "rvps_config.type"),
    ('[attestation_service.attestation_token_broker]\nduration_min = 0\n', "duration_min"),
    ('[attestation_service.attestation_token_broker]\nsigner = {}\n', "signer"),
    ('[storage_backend]\nstorage_type = "Postgres"\n', "storage_backend.storage_type"),
    ('[http_server]\nsockets = "0.0.0.0:1"\n', "http_server.sockets"),
])
def test_unsupported_or_different_meaning_is_refused_by_name(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        _load(tmp_path, text, data_dir="/d")
    assert "\n" not in str(e.value)
