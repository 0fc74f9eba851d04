"""Init-data: the CoCo TOML document a container is started with, and Arca's keys inside it
(docs/guest.md). Unknown keys are refused by name. The digest is over the exact bytes (what the
TEE binds). This module parses; it does not fetch."""

from __future__ import annotations

import hashlib
import json

from arca.wire.errors import InvalidInput
from arca.wire.record import dataclass, field

TYPE_CHECKING = False  # typing costs ms per start: see arca.wire.record
if TYPE_CHECKING:
    from typing import Any

#: Larger documents are refused before parsing (Kubernetes caps all annotations at 256 KiB).
MAX_INIT_DATA_BYTES = 256 * 1024
ALGORITHMS = ("sha256", "sha384", "sha512")
INIT_DATA_VERSION = "0.1.0"
#: Character sets checked without ``re``: its imports cost ~5 ms of every attested TD start.
WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
NAME_CHARS = WORD | {".", "-"}


def is_resource_path(path: str) -> bool:
    """repo/type/tag of ``NAME_CHARS``; components never "." or ".." (no traversal at the KBS)."""
    parts = path.split("/")
    return len(parts) == 3 and all(p not in ("", ".", "..") and set(p) <= NAME_CHARS
                                   for p in parts)


class InitDataError(InvalidInput):
    """The init-data document is malformed or has unknown keys."""


@dataclass(frozen=True)
class Resource:
    path: str
    name: str
    env: str | None = None
    file: bool = True


#: What a TD may share or receive from the host beyond the default (docs/threat-model.md).
NAMESPACES = ("pid", "ipc", "mount")


@dataclass(frozen=True)
class ExecPolicy:
    allow_args: tuple[tuple[str, ...], ...] = ()
    allow_env: tuple[str, ...] = ()
    allow_exec: bool = False
    #: Absolute paths where host mounts (volumes) may land, besides the fixed default set.
    allow_mounts: tuple[str, ...] = ()
    #: Namespaces (of ``NAMESPACES``) the TD may share with other containers or the host.
    allow_namespaces: tuple[str, ...] = ()
    allow_hooks: bool = False
    allow_propagation: bool = False
    #: Variable-name patterns left out of the measurement as orchestrator-injected, beyond
    #: the minimum (``arca.wire.descriptor.ORCHESTRATOR_ENV_ALLOWLIST``); they may only add.
    orchestrator_env: tuple[str, ...] = ()


@dataclass(frozen=True)
class AgentOptions:
    kbs_timeout: float = 10.0
    kbs_retries: int = 3
    kbs_backoff: float = 0.5
    #: The curve of the agent's fresh key: X25519 (fast: docs/guest.md) or P-256, the only
    #: curve Trustee's KBS accepts.
    tee_key: str = "X25519"
    #: Accept a broker that is not authenticated (plain HTTP, or https without kbs_cert).
    insecure_kbs: bool = False


@dataclass(frozen=True)
class InitData:
    raw: bytes
    algorithm: str = "sha384"
    kbs_url: str | None = None
    kbs_cert: str | None = None
    resources: tuple[Resource, ...] = ()
    policy: ExecPolicy = field(default_factory=ExecPolicy)
    agent: AgentOptions = field(default_factory=AgentOptions)

    def digest(self) -> bytes:
        return hashlib.new(self.algorithm, self.raw).digest()

    @classmethod
    def parse(cls, raw: bytes) -> InitData:
        if len(raw) > MAX_INIT_DATA_BYTES:
            raise InitDataError(f"init-data exceeds {MAX_INIT_DATA_BYTES} bytes")
        try:
            doc = _toml(raw.decode("utf-8"))
        except (ValueError, RecursionError) as e:  # Unicode/TOMLDecodeError; deep nesting
            raise InitDataError(f"init-data is not UTF-8 TOML: {e}") from None
        _keys(doc, {"version", "algorithm", "data"}, "init-data")
        if doc.get("version") != INIT_DATA_VERSION:
            raise InitDataError(f"init-data version must be {INIT_DATA_VERSION!r}, "
                                f"got {doc.get('version')!r}")
        algorithm = doc.get("algorithm", "sha384")
        if algorithm not in ALGORITHMS:
            raise InitDataError(f"init-data algorithm {algorithm!r} is not one of {ALGORITHMS}")
        data = doc.get("data", {})
        _keys(data, {"kbs_url", "kbs_cert", "resources", "policy", "agent"}, "init-data [data]")
        for k, v in data.items():
            if not isinstance(v, str):
                raise InitDataError(f"init-data data.{k} must be a string")
        url = data.get("kbs_url")
        if url is not None and not url.startswith(("https://", "http://")):
            raise InitDataError(f"init-data data.kbs_url {url!r} must be an http(s) URL")
        cert = data.get("kbs_cert")
        if cert is not None and "-----BEGIN CERTIFICATE-----" not in cert:
            raise InitDataError("init-data data.kbs_cert must be a PEM certificate")
        resources = _resources(_embedded(data.get("resources", ""), "resources"))
        if resources and url is None:
            raise InitDataError("init-data lists resources but no data.kbs_url")
        return cls(raw, algorithm, url, cert, resources,
                   _policy(_embedded(data.get("policy", ""), "policy")),
                   _agent(_embedded(data.get("agent", ""), "agent")))

    def check_broker_authenticated(self) -> None:
        """Refuse a broker the agent cannot authenticate (plain HTTP, or https without a
        pinned ``kbs_cert``) unless ``agent.insecure_kbs`` says so explicitly (issue 13.6)."""
        url = self.kbs_url
        if url is not None and (url.startswith("http://") or self.kbs_cert is None) \
                and not self.agent.insecure_kbs:
            raise InitDataError(f"init-data data.kbs_url {url!r} is not authenticated (plain "
                                "HTTP or no data.kbs_cert); set agent.insecure_kbs = true to "
                                "accept that")


def _toml(text: str) -> dict[str, Any]:
    import tomllib  # when first needed: importing it costs a vm guest ~0.4 s under TCG

    return tomllib.loads(text)


def _embedded(text: str, what: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        if text.lstrip().startswith("{"):
            doc = json.loads(text)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
            return doc
        return _toml(text)
    except (ValueError, RecursionError) as e:  # TOMLDecodeError is one; deep nesting
        raise InitDataError(f"init-data data.{what} is neither TOML nor a JSON object: "
                            f"{e}") from None


def _keys(obj: Any, allowed: set[str], what: str) -> None:
    if not isinstance(obj, dict):
        raise InitDataError(f"{what} must be a table")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise InitDataError(f"{what}: unknown key(s) {', '.join(unknown)}")


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InitDataError(f"init-data {what} must be a list of strings")
    return tuple(value)


def _resources(doc: dict[str, Any]) -> tuple[Resource, ...]:
    _keys(doc, {"resource"}, "init-data data.resources")
    items = doc.get("resource", [])
    if not isinstance(items, list):
        raise InitDataError("init-data data.resources: 'resource' must be a list of tables")
    out: list[Resource] = []
    for i, r in enumerate(items):
        what = f"init-data resource #{i + 1}"
        _keys(r, {"path", "name", "env", "file"}, what)
        path, name, env, file = r.get("path"), r.get("name"), r.get("env"), r.get("file", True)
        if not isinstance(path, str) or not is_resource_path(path):
            raise InitDataError(f"{what}: path must be 'repo/type/tag', got {path!r}")
        if not isinstance(name, str) or not (
                0 < len(name) < 256 and name[0] in WORD and set(name) <= NAME_CHARS):
            raise InitDataError(f"{what}: name must be a plain file name, got {name!r}")
        if env is not None and (not isinstance(env, str) or not env or env[0].isdigit()
                                or not set(env) <= WORD):
            raise InitDataError(f"{what}: env must be a variable name, got {env!r}")
        if not isinstance(file, bool):
            raise InitDataError(f"{what}: file must be a boolean")
        if not file and env is None:
            raise InitDataError(f"{what}: neither a file nor an env variable")
        if any(o.name == name for o in out):
            raise InitDataError(f"{what}: duplicate name {name!r}")
        out.append(Resource(path, name, env, file))
    return tuple(out)


def _policy(doc: dict[str, Any]) -> ExecPolicy:
    flags = ("allow_exec", "allow_hooks", "allow_propagation")
    lists = ("allow_env", "allow_mounts", "allow_namespaces", "orchestrator_env")
    _keys(doc, {"allow_args", *flags, *lists}, "init-data data.policy")
    args = doc.get("allow_args", [])
    if not isinstance(args, list):
        raise InitDataError("init-data policy.allow_args must be a list of lists of patterns")
    for k in flags:
        if not isinstance(doc.get(k, False), bool):
            raise InitDataError(f"init-data policy.{k} must be a boolean")
    env, mounts, ns, orch = (_strings(doc.get(k, []), f"policy.{k}") for k in lists)
    for m in mounts:
        if not m.startswith("/") or m == "/" or any(c in ("", ".", "..") for c in
                                                    m[1:].split("/")):
            raise InitDataError(f"init-data policy.allow_mounts: {m!r} is not a normal "
                                "absolute path other than /")
    if not set(ns) <= set(NAMESPACES):
        raise InitDataError(f"init-data policy.allow_namespaces: only {NAMESPACES} may be "
                            f"listed, got {list(ns)}")
    return ExecPolicy(tuple(_strings(a, "policy.allow_args entry") for a in args), env,
                      doc.get("allow_exec", False), mounts, ns, doc.get("allow_hooks", False),
                      doc.get("allow_propagation", False), orch)


def _agent(doc: dict[str, Any]) -> AgentOptions:
    _keys(doc, {"kbs_timeout", "kbs_retries", "kbs_backoff", "tee_key", "insecure_kbs"},
          "init-data data.agent")
    timeout, retries, backoff, tee_key = (doc.get(k, getattr(AgentOptions, k)) for k in (
        "kbs_timeout", "kbs_retries", "kbs_backoff", "tee_key"))
    for name, v, lo, hi in (("kbs_timeout", timeout, 0.1, 600), ("kbs_backoff", backoff, 0, 60)):
        if type(v) not in (int, float) or not lo <= v <= hi:
            raise InitDataError(f"init-data agent.{name} must be a number in [{lo}, {hi}]")
    if type(retries) is not int or not 0 <= retries <= 20:
        raise InitDataError("init-data agent.kbs_retries must be an integer in [0, 20]")
    if tee_key not in ("X25519", "P-256"):
        raise InitDataError(f"init-data agent.tee_key must be 'X25519' or 'P-256', got {tee_key!r}")
    insecure = doc.get("insecure_kbs", False)
    if not isinstance(insecure, bool):
        raise InitDataError("init-data agent.insecure_kbs must be a boolean")
    return AgentOptions(float(timeout), retries, float(backoff), tee_key, insecure)
