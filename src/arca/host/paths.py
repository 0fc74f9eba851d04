"""Where the host zone keeps its state. Environment variables exist so tests stay isolated."""

from __future__ import annotations

import os
import pathlib


def root_dir() -> pathlib.Path:
    """Persistent state: guest runtime, image store, sim platform keys, digest caches."""
    return pathlib.Path(os.environ.get("ARCA_ROOT", "/var/lib/arca"))


def run_dir() -> pathlib.Path:
    """Volatile state: runtime container state, sockets, pid files (tmpfs on a real host)."""
    return pathlib.Path(os.environ.get("ARCA_RUN", "/run/arca-host"))
