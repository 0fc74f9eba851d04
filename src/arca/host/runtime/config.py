"""Runtime-wide settings: which ``runc`` to delegate to and the default TEE.

Read from ``$ARCA_RUNTIME_CONFIG`` or ``/etc/arca/runtime.json`` (optional), overridden by the
environment (``ARCA_RUNC``, ``ARCA_TEE``). A file that exists but is malformed is an error, not
a silent fallback: an operator who configured a default TEE must not get plain runc instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from arca.wire.errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/arca/runtime.json"
_KEYS = {"runc", "default_tee"}


@dataclass(frozen=True)
class RuntimeConfig:
    #: The real OCI runtime every call is delegated to (a name on PATH or a path).
    runc: str = "runc"
    #: TEE for containers without an ``io.arca.tee`` annotation; ``none`` means plain runc.
    default_tee: str = "none"


def load_config(environ: dict[str, str] | os._Environ[str] | None = None) -> RuntimeConfig:
    env = os.environ if environ is None else environ
    path = env.get("ARCA_RUNTIME_CONFIG", DEFAULT_CONFIG_PATH)
    values: dict[str, str] = {}
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raw = None
    except OSError as e:
        raise ConfigError(f"cannot read runtime config {path}: {e.strerror}") from None
    if raw is not None:
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"runtime config {path} is not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise ConfigError(f"runtime config {path} must be a JSON object")
        unknown = set(obj) - _KEYS
        if unknown:
            raise ConfigError(f"runtime config {path}: unknown key(s) {sorted(unknown)}")
        for k, v in obj.items():
            if not isinstance(v, str) or not v:
                raise ConfigError(f"runtime config {path}: {k!r} must be a non-empty string")
            values[k] = v
    if env.get("ARCA_RUNC"):
        values["runc"] = env["ARCA_RUNC"]
    if env.get("ARCA_TEE"):
        values["default_tee"] = env["ARCA_TEE"]
    return RuntimeConfig(**values)
