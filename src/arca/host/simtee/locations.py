"""Where the sim platform keeps its files.

Persistent (``root_dir()/simtee``): the sim root and platform keys and certificates.
Volatile (``run_dir()/simtee``): lock, pid file, control socket, log, and the registered TDs
(they outlive a daemon restart, not a host reboot, exactly like the containers they describe).
"""

from __future__ import annotations

import pathlib

from arca.host import paths


def key_dir() -> pathlib.Path:
    return paths.root_dir() / "simtee"


def root_cert_path() -> pathlib.Path:
    return key_dir() / "sim-root.pem"


def state_dir() -> pathlib.Path:
    return paths.run_dir() / "simtee"


def control_socket() -> pathlib.Path:
    return state_dir() / "control.sock"


def lock_file() -> pathlib.Path:
    return state_dir() / "daemon.lock"


def pid_file() -> pathlib.Path:
    return state_dir() / "daemon.pid"


def log_file() -> pathlib.Path:
    return state_dir() / "daemon.log"


def registrations_dir() -> pathlib.Path:
    return state_dir() / "tds"


def device_dir(td_id: str) -> pathlib.Path:
    """The TD's device directory, bind-mounted at ``/run/arca/tee`` (same as the runtime's)."""
    return paths.run_dir() / "td" / td_id


def device_socket(td_id: str) -> pathlib.Path:
    return device_dir(td_id) / "sim.sock"
