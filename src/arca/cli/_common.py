"""Small helpers shared by command modules (argument reading, not behaviour)."""

from __future__ import annotations

from pathlib import Path

from arca.wire.errors import ConfigError


def read_init_data(path: Path | None) -> bytes | None:
    """The bytes of an ``--init-data`` file, or None; an unreadable file is a ConfigError."""
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read init-data {path}: {e.strerror}") from None
