"""Configuration of the KBS: one frozen dataclass, read from a TOML file and CLI overrides.

The file uses the same names as the CLI options, with ``_`` for ``-``, e.g.::

    listen = "0.0.0.0:8080"
    db = "postgresql://kbs@db/kbs"
    data_dir = "/var/lib/arca-kbs"
    admin_public_key = "/etc/arca-kbs/admin.pub"
    trust_sim_root = ["/etc/arca-kbs/sim-root.pem"]
    tls_cert = "/etc/arca-kbs/tls.crt"
    tls_key = "/etc/arca-kbs/tls.key"
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import tomllib
from dataclasses import dataclass, field
from typing import Any

from arca.kbs import tokens, trustee_config
from arca.wire.errors import ConfigError

log = logging.getLogger("arca.kbs")

#: How long a session (and its nonce and cookie) lives: Trustee's default.
DEFAULT_SESSION_TIMEOUT = 300
#: Lifetime of an EAR token.
DEFAULT_TOKEN_LIFETIME = 300
#: Longest lifetime of an admin token (its ``exp`` at most this far in the future).
DEFAULT_ADMIN_TOKEN_MAX_LIFETIME = tokens.DEFAULT_ADMIN_TOKEN_MAX_LIFETIME
#: Settings holding a list of files (a single string in the file is one file).
_PATH_LISTS = ("trust_sim_root", "insecure_dcap_root", "insecure_amd_ark")


@dataclass(frozen=True)
class KbsConfig:
    data_dir: str
    listen: str = "127.0.0.1:8080"
    db: str | None = None  # default: sqlite file in data_dir
    admin_public_key: str | None = None
    kek_file: str | None = None  # default: data_dir/kek.bin, created on first start
    trust_sim_root: tuple[str, ...] = ()
    collateral: str | None = None
    # Hardware collateral fetched by the KBS (arca.kbs.collateral): Intel PCS / AMD KDS at
    # their public URLs, or at these (mirrors); cached in DATA_DIR/collateral-cache.
    collateral_online: bool = False
    pcs_url: str | None = None
    kds_url: str | None = None
    #: SNP minimum TCB: {"Milan": {"bootloader": 3, ...}} or ["Milan:bootloader=3,..."].
    snp_min_tcb: Any = None
    #: Roots pinned instead of Intel's / AMD's (test PKIs, pre-production parts): insecure.
    insecure_dcap_root: tuple[str, ...] = ()
    insecure_amd_ark: tuple[str, ...] = ()
    insecure_allow_sample: bool = False
    insecure_http: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    session_timeout: int = DEFAULT_SESSION_TIMEOUT
    token_lifetime: int = DEFAULT_TOKEN_LIFETIME
    admin_token_max_lifetime: int = DEFAULT_ADMIN_TOKEN_MAX_LIFETIME
    workers: int = 1
    access_log: bool = True
    issuer: str = "arca-kbs"
    #: Admin tokens must carry this ``iss`` / have this among ``aud`` (Trustee's
    #: ``identity_providers`` ``issuer``/``audience``); ``None``: not checked.
    admin_token_issuer: str | None = None
    admin_token_audience: str | None = None
    #: (role, endpoint regex) pairs (Trustee's ``regex_acl``): an admin token's ``role`` must
    #: be one whose regex matches the request path; an empty tuple allows no call (as
    #: Trustee's). ``None``: no ACL, every valid admin token may call everything.
    admin_acls: tuple[tuple[str, str], ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def db_url(self) -> str:
        if self.db:
            return self.db
        return f"sqlite:///{pathlib.Path(self.data_dir, 'kbs.db')}"

    @property
    def kek_path(self) -> pathlib.Path:
        return pathlib.Path(self.kek_file or pathlib.Path(self.data_dir, "kek.bin"))

    def host_port(self) -> tuple[str, int]:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"listen address {self.listen!r} is not HOST:PORT")
        return host.strip("[]"), int(port)

    def check(self) -> None:
        """Refuse inconsistent settings at start-up rather than at request time."""
        self.host_port()
        if not self.insecure_http and not (self.tls_cert and self.tls_key):
            raise ConfigError("HTTPS needs --tls-cert and --tls-key (or --insecure-http)")
        if min(self.session_timeout, self.token_lifetime, self.admin_token_max_lifetime) <= 0:
            raise ConfigError("session timeout, token lifetime and admin token max lifetime "
                              "must be positive")
        for name in ("admin_public_key", "tls_cert", "tls_key", "collateral"):
            value = getattr(self, name)
            if value and not os.path.exists(value):
                raise ConfigError(f"{name.replace('_', '-')} {value} does not exist")
        for name in ("pcs_url", "kds_url"):
            url = getattr(self, name)
            if url is not None and not url.startswith(("https://", "http://")):
                raise ConfigError(f"{name.replace('_', '-')} {url!r} is not an http(s) URL")
        for name in _PATH_LISTS:
            for root in getattr(self, name):
                if not os.path.isfile(root):
                    raise ConfigError(f"{name.replace('_', '-')} {root} does not exist")
        if self.insecure_allow_sample:
            log.warning("--insecure-allow-sample: unsigned 'sample' evidence can be accepted")
        if self.insecure_http:
            log.warning("--insecure-http: serving plain HTTP, secrets rely on JWE alone")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> KbsConfig:
        obj = json.loads(text)
        for name in _PATH_LISTS:
            obj[name] = tuple(obj.get(name, ()))
        acls = obj.get("admin_acls")
        obj["admin_acls"] = None if acls is None else tuple(tuple(a) for a in acls)
        return cls(**obj)


def load(file: str | None, overrides: dict[str, Any], *,
         data_dir_default: bool = False) -> KbsConfig:
    """File values, then the CLI ``overrides`` that are not ``None``. Without a data
    directory: the directory of a ``sqlite:///FILE`` database, else (``data_dir_default``,
    what ``arca kbs serve`` asks for) :func:`default_data_dir`, else an error."""
    values: dict[str, Any] = {}
    if file:
        try:
            values = tomllib.loads(pathlib.Path(file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"config file {file}: {e}") from None
    if trustee_config.is_trustee(values):
        values = trustee_config.settings(values, str(file))
    names = {f.name for f in dataclasses.fields(KbsConfig)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"config file {file}: unknown settings {sorted(unknown)}")
    for k, v in values.items():
        _check_type(file, k, v)
    values.update({k: v for k, v in overrides.items() if v is not None and v != ()})
    for name in _PATH_LISTS:
        if isinstance(values.get(name), str):
            values[name] = (values[name],)
        values[name] = tuple(values.get(name, ()))
    if "data_dir" not in values:
        db = values.get("db")
        if not data_dir_default and not (isinstance(db, str) and db.startswith("sqlite:///")):
            raise ConfigError("a data directory is required (--data-dir)")
        values["data_dir"] = default_data_dir(db)
    return KbsConfig(**values)


def default_data_dir(db: str | None) -> str:
    """Without ``--data-dir``: the directory of a ``sqlite:///FILE`` database, else
    ``$XDG_STATE_HOME/arca-kbs`` (``~/.local/state/arca-kbs``), or ``/var/lib/arca-kbs`` for
    root."""
    if db and db.startswith("sqlite:///"):
        return str(pathlib.Path(db.removeprefix("sqlite:///")).parent)
    if os.geteuid() == 0:
        return "/var/lib/arca-kbs"
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return str(pathlib.Path(state, "arca-kbs"))


#: What a config file value may be, by the field's declared type.
_TOML_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "str": ((str,), "a string"), "str | None": ((str, type(None)), "a string"),
    "bool": ((bool,), "true or false"), "int": ((int,), "an integer"),
    "tuple[str, ...]": ((list, str), "a list of strings"),
    "dict[str, Any]": ((dict,), "a table"),
}


def _check_type(file: str | None, name: str, value: Any) -> None:
    """A value of the wrong type in the file: one line naming the setting (not a traceback
    from deep inside the server when it is first used)."""
    ftype = next(str(f.type) for f in dataclasses.fields(KbsConfig) if f.name == name)
    allowed, what = _TOML_TYPES.get(ftype, ((object,), "any value"))
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    if ok and isinstance(value, list):
        ok = all(isinstance(x, str) for x in value)
    if not ok:
        raise ConfigError(f"config file {file}: {name} must be {what}, not {value!r}")
