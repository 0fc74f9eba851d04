"""Talking to the sim platform daemon: what ``arca-runtime`` and ``arca simtee`` use.

Imports only the standard library (the runtime's hot path). :func:`ensure_running` starts the
daemon when it is absent, detached from the caller: its own session, stdio on its log file
(never the container's stdio pipes the runtime inherited from the shim), no inherited fds.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time

from arca.host.simtee import locations
from arca.wire.errors import ArcaError, ConfigError, InvalidInput

TYPE_CHECKING = False  # ``typing`` costs ~3 ms per arca-runtime call; annotations are strings
if TYPE_CHECKING:
    from typing import Any

#: How long to wait for a freshly spawned daemon (key generation happens on the first start).
START_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 10.0


class PlatformUnavailable(ArcaError):
    """The sim platform daemon is not running (or not answering)."""


class PlatformRefused(InvalidInput):
    """The daemon answered with an error (bad registration, duplicate TD, ...)."""


def request(req: dict[str, Any], *, timeout: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
    path = str(locations.control_socket())
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise PlatformUnavailable(f"sim platform daemon is not running ({path}: {e})") from None
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = bytearray()
        while chunk := s.recv(65536):
            buf += chunk
    except OSError as e:
        raise PlatformUnavailable(f"sim platform daemon did not answer: {e}") from None
    finally:
        s.close()
    try:
        resp = json.loads(buf)
    except ValueError:
        raise PlatformUnavailable("sim platform daemon sent no valid answer") from None
    if "error" in resp:
        raise PlatformRefused(f"sim platform: {resp['error']}")
    return dict(resp)


def is_running() -> bool:
    try:
        request({"op": "ping"}, timeout=2.0)
        return True
    except PlatformUnavailable:
        return False


def spawn() -> None:
    """Start a detached daemon (it exits at once if another one holds the lock)."""
    import subprocess
    import sys

    d = locations.state_dir()
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(locations.log_file(), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                 0o600)
    try:
        subprocess.Popen(
            [sys.executable, "-m", "arca.host.simtee", "serve"],
            stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, close_fds=True,
            start_new_session=True, cwd="/",
        )
    finally:
        os.close(fd)


def ensure_running(timeout: float = START_TIMEOUT_S) -> None:
    if is_running():
        return
    spawn()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.02)
        if is_running():
            return
    raise ConfigError(
        f"sim platform daemon did not start within {timeout:.0f}s; see {locations.log_file()}"
    )


def register(td_id: str, descriptor: dict[str, Any], init_data: bytes | None,
             launch: dict[str, Any] | None = None) -> dict[str, Any]:
    req = {
        "op": "register", "td_id": td_id, "descriptor": descriptor,
        "init_data": base64.b64encode(init_data).decode() if init_data is not None else None,
    }
    if launch is not None:  # a vm TD: the platform measures this launch itself
        req["launch"] = launch
    # One round trip when the daemon is up (every create after the first); otherwise start
    # it and retry. Twice: it may exit for idleness between its start and our request.
    for _ in range(2):
        try:
            return request(req)
        except PlatformUnavailable:
            ensure_running()
    return request(req)


def unregister(td_id: str) -> None:
    """Forget a TD. Without a running daemon, drop its persisted registration directly, so a
    delete never has to start a daemon just to tell it about a container that is gone."""
    try:
        request({"op": "unregister", "td_id": td_id})
    except PlatformUnavailable:
        (locations.registrations_dir() / f"{td_id}.json").unlink(missing_ok=True)
        locations.device_socket(td_id).unlink(missing_ok=True)


def list_tds() -> list[dict[str, str]]:
    return list(request({"op": "list"})["tds"])


def read_pid() -> int | None:
    try:
        return int(locations.pid_file().read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def stop(timeout: float = 10.0) -> bool:
    """Stop the daemon; True when one was running."""
    pid = read_pid()
    try:
        request({"op": "stop"}, timeout=2.0)
    except PlatformUnavailable:
        if pid is None:
            return False
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid is None or not os.path.exists(f"/proc/{pid}") or _is_zombie(pid):
            return True
        time.sleep(0.02)
    return True


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
