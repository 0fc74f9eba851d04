"""Small helpers shared by command modules (argument reading, not behaviour)."""

from __future__ import annotations

from pathlib import Path

from arca.wire.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from arca.host.images.registry import Credentials


def read_init_data(path: Path | None) -> bytes | None:
    """The bytes of an ``--init-data`` file, or None; an unreadable file is a ConfigError."""
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read init-data {path}: {e.strerror}") from None


def measured_init_data(path: Path | None, kbs: str | None, volumes: list[str]) -> bytes | None:
    """The init-data ``arca measure``/``policy generate`` compute for: the ``--init-data`` file,
    or what ``arca run --kbs URL -v ...:DST`` generates (the two exclude each other)."""
    raw = read_init_data(path)
    if kbs is not None or volumes:
        from arca.host.containers.spec import Volume, generated_init_data

        if raw is not None:
            raise ConfigError("--kbs/--volume and --init-data exclude each other")
        raw = generated_init_data(kbs, [Volume.parse(f"/:{v}").destination for v in volumes])
    return raw


def registry_credentials(creds: str | None, reference: str) -> Credentials | None:
    """--creds, else $ARCA_REGISTRY_CREDS, else the registry's entry in Docker's
    config.json (``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``)."""
    import base64
    import binascii
    import json
    import os

    from arca.host.images.reference import Reference
    from arca.host.images.registry import Credentials  # noqa: F811 - TYPE_CHECKING above

    if creds:
        return Credentials.parse(creds)
    if os.environ.get("ARCA_REGISTRY_CREDS"):
        return Credentials.parse(os.environ["ARCA_REGISTRY_CREDS"])
    cfg = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
    try:
        auths = json.loads(cfg.read_bytes()).get("auths", {})
    except (OSError, ValueError, AttributeError):
        return None
    registry = Reference.parse(reference).registry
    keys = [registry] + (["https://index.docker.io/v1/"] if registry == "docker.io" else [])
    for key in keys:
        entry = auths.get(key) if isinstance(auths, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("auth"), str):
            try:
                return Credentials.parse(base64.b64decode(entry["auth"]).decode())
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None
    return None


def launch_options(*, firmware: Path | None = None, kernel: Path | None = None,
                   initrd: Path | None = None, vcpus: int | None = None,
                   memory: int | None = None, cpu: str | None = None,
                   guest_features: str | None = None, snp_policy: str | None = None,
                   rtmr0: str | None = None, cmdline: str | None = None) -> dict[str, object]:
    """A confidential VM backend's launch options from ``arca measure``/``policy generate``
    flags (only those given; the backend refuses options it does not take)."""
    out: dict[str, object] = {}
    for key, value in (("firmware", firmware), ("kernel", kernel), ("initrd", initrd)):
        if value is not None:
            out[key] = str(value.absolute())
    for key, number in (("guest_features", guest_features), ("policy", snp_policy)):
        if number is not None:
            try:
                out[key] = int(number, 0)
            except ValueError:
                raise ConfigError(f"--{key.replace('_', '-')} {number!r} is not a number "
                                  "(decimal or 0x hex)") from None
    for key, other in (("vcpus", vcpus), ("memory_mib", memory), ("cpu", cpu),
                       ("rtmr0", rtmr0), ("cmdline", cmdline)):
        if other is not None:
            out[key] = other
    return out
