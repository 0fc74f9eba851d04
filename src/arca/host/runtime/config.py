"""Runtime-wide settings: which ``runc`` to delegate to and the default TEE.

Read from ``$ARCA_RUNTIME_CONFIG`` or ``/etc/arca/runtime.json`` (optional), overridden by the
environment (``ARCA_RUNC``, ``ARCA_TEE``). A file that exists but is malformed is an error, not
a silent fallback: an operator who configured a default TEE must not get plain runc instead.
Plain class, JSON imported only when a file exists: every ``arca-runtime`` call reads this.
"""

from __future__ import annotations

import os

# ``collections.abc`` pulls in ``collections`` (~2 ms); the annotation is only for mypy.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_CONFIG_PATH = "/etc/arca/runtime.json"
_KEYS = ("runc", "default_tee")


class RuntimeConfig:
    __slots__ = ("runc", "default_tee")

    def __init__(self, runc: str = "runc", default_tee: str = "none") -> None:
        #: The real OCI runtime every call is delegated to (a name on PATH or a path).
        self.runc = runc
        #: TEE for containers without an ``io.arca.tee`` annotation; ``none``: plain runc.
        self.default_tee = default_tee

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RuntimeConfig) and (self.runc, self.default_tee) == (
            other.runc, other.default_tee)

    def __repr__(self) -> str:
        return f"RuntimeConfig(runc={self.runc!r}, default_tee={self.default_tee!r})"


def _error(msg: str) -> Exception:
    from arca.wire.errors import ConfigError

    return ConfigError(msg)


def load_config(environ: Mapping[str, str] | None = None) -> RuntimeConfig:
    env = os.environ if environ is None else environ
    path = env.get("ARCA_RUNTIME_CONFIG", DEFAULT_CONFIG_PATH)
    values: dict[str, str] = {}
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raw = None
    except OSError as e:
        raise _error(f"cannot read runtime config {path}: {e.strerror}") from None
    if raw is not None:
        import json

        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise _error(f"runtime config {path} is not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise _error(f"runtime config {path} must be a JSON object")
        from arca.host.backends import available

        # An object named after a backend configures it (validated by that backend).
        sections = {k for k, v in obj.items() if isinstance(v, dict) and available(k)}
        unknown = set(obj) - set(_KEYS) - sections
        if unknown:
            raise _error(f"runtime config {path}: unknown key(s) {sorted(unknown)}")
        for k, v in obj.items():
            if k in sections:
                continue
            if not isinstance(v, str) or not v:
                raise _error(f"runtime config {path}: {k!r} must be a non-empty string")
            values[k] = v
    if env.get("ARCA_RUNC"):
        values["runc"] = env["ARCA_RUNC"]
    if env.get("ARCA_TEE"):
        values["default_tee"] = env["ARCA_TEE"]
    return RuntimeConfig(**values)
