"""podman's ``run`` flags that shape a container without touching its image lookup:
``-e NAME`` / ``--env-file`` (values from the caller), ``--memory``, ``--cpus``,
``--read-only``, ``--label``, and ``--entrypoint``/``-u``/``-w`` (applied to the image config
before its process is derived, :func:`override_config`).

Each parser refuses bad input with one line naming the flag. Imported only when such a flag is
given: ``arca run`` without them pays nothing.
"""

from __future__ import annotations

import os

from arca.wire.errors import InvalidInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from arca.host.images.manifest import ImageConfig

#: ``--memory`` suffixes, as podman reads them (binary multiples).
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
#: The CFS period ``--cpus`` sets its quota against (podman's and runc's default).
CPU_PERIOD_US = 100_000
#: Writable tmpfs under ``--read-only`` (podman's ``--read-only-tmpfs``).
READ_ONLY_TMPFS = ("/tmp", "/var/tmp", "/run")


def resolve_env(values: list[str], env_files: list[str],
                environ: Mapping[str, str] | None = None) -> list[str]:
    """``--env-file`` lines first, then ``-e``; an entry without ``=`` takes the caller's
    value of that variable, and is dropped if the caller has none (as podman does)."""
    environ = os.environ if environ is None else environ
    out: list[str] = []
    for path in env_files:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise InvalidInput(f"--env-file {path}: {getattr(err, 'strerror', None) or err}"
                               ) from None
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line)
    out += values
    resolved: list[str] = []
    for item in out:
        name, eq, _ = item.partition("=")
        if not name or any(c.isspace() for c in name):
            raise InvalidInput(f"environment variable {item!r}: expected NAME=VALUE or NAME")
        if eq:
            resolved.append(item)
        elif name in environ:
            resolved.append(f"{name}={environ[name]}")
    return resolved


def parse_memory(value: str) -> int:
    """``--memory 512m`` -> bytes (at least 6 MiB: runc's floor for a container)."""
    v = value.strip().lower()
    num = v.rstrip("bkmgt")
    unit = v[len(num):].removesuffix("b") if len(v) - len(num) > 1 else v[len(num):]
    try:
        n = int(float(num) * _UNITS[unit])
    except (ValueError, KeyError):
        raise InvalidInput(f"--memory {value!r}: expected a size such as 512m or 2g") from None
    if n < 6 << 20:
        raise InvalidInput(f"--memory {value!r}: at least 6m")
    return n


def parse_cpus(value: str) -> float:
    try:
        n = float(value)
    except ValueError:
        raise InvalidInput(f"--cpus {value!r}: expected a number such as 1.5") from None
    if not 0.01 <= n <= 1024:
        raise InvalidInput(f"--cpus {value!r}: must be between 0.01 and 1024")
    return n


def parse_labels(values: list[str]) -> dict[str, str]:
    out = {}
    for v in values:
        k, _, val = v.partition("=")
        if not k:
            raise InvalidInput(f"--label {v!r}: expected KEY=VALUE")
        out[k] = val
    return out


def apply(spec: dict[str, Any], *, memory: int | None = None, cpus: float | None = None,
          read_only: bool = False) -> None:
    """Limits and a read-only root in an OCI spec (cgroup limits are enforced by runc)."""
    res = spec.setdefault("linux", {}).setdefault("resources", {})
    if memory is not None:
        res["memory"] = {"limit": memory, "swap": memory}
    if cpus is not None:
        res["cpu"] = {"quota": int(cpus * CPU_PERIOD_US), "period": CPU_PERIOD_US}
    if read_only:
        spec["root"]["readonly"] = True
        have = {m["destination"] for m in spec["mounts"]}
        spec["mounts"] += [{"destination": d, "type": "tmpfs", "source": "tmpfs",
                            "options": ["nosuid", "nodev", "mode=1777"]}
                           for d in READ_ONLY_TMPFS if d not in have]


def override_config(config: ImageConfig, *, entrypoint: str | None = None,
                    user: str | None = None, workdir: str | None = None) -> ImageConfig:
    """The image config with ``--entrypoint`` (which, as in podman, also drops the image's
    Cmd), ``-u`` and ``-w`` in place of the image's."""
    import dataclasses

    changes: dict[str, Any] = {}
    if entrypoint is not None:
        changes["entrypoint"] = (entrypoint,) if entrypoint else ()
        changes["cmd"] = ()
    if user is not None:
        if not user:
            raise InvalidInput("--user: empty")
        changes["user"] = user
    if workdir is not None:
        if not workdir.startswith("/"):
            raise InvalidInput(f"--workdir {workdir!r}: must be an absolute path")
        changes["working_dir"] = workdir
    return dataclasses.replace(config, **changes) if changes else config
