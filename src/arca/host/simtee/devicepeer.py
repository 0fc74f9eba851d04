"""Which processes a TD's sim device answers: only those of that TD (issue 13, items 1-2).

The device socket of a TD is reachable from outside the TD through ``/proc/<pid>/root`` by
anyone allowed to inspect one of its processes (a host user with the workload's uid, a
container that joined its PID namespace). So the device binds to the TD's PID and mount
namespaces when its agent (PID 1 of a PID namespace other than the host's) first asks, and
from then on answers only processes in both of those namespaces: the agent, its workload,
``arca-evidence`` and an ``exec`` the measured policy allowed. Before the agent asked, only root
can reach the socket (the device directory is root-only on the host and the agent runs as root
until it ``exec``s). The binding is persisted beside the registration, so a restarted daemon
keeps it. What it does not do: tell two processes of the same namespaces apart.
"""

from __future__ import annotations

import os
import threading

from arca.host.runtime.state import write_atomic
from arca.host.simtee import locations
from arca.wire.errors import PolicyDenied


def _namespaces(pid: int) -> tuple[str, str]:
    return os.readlink(f"/proc/{pid}/ns/pid"), os.readlink(f"/proc/{pid}/ns/mnt")


def _innermost_pid(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    return 0


class Peers:
    def __init__(self) -> None:
        self._bound: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _file(td_id: str) -> str:
        return str(locations.registrations_dir() / f"{td_id}.peer")

    def check(self, td_id: str, pid: int) -> None:
        """Raise :class:`PolicyDenied` unless ``pid`` may use the device of ``td_id``."""
        try:
            ns = _namespaces(pid)
            first = _innermost_pid(pid) == 1 and ns[0] != os.readlink("/proc/self/ns/pid")
        except (OSError, ValueError):
            raise PolicyDenied(f"TD {td_id}: cannot identify device peer pid {pid}") from None
        with self._lock:
            bound = self._bound.get(td_id)
            if bound is None:
                try:
                    with open(self._file(td_id), encoding="ascii") as f:
                        pidns, _, mntns = f.read().partition("\n")
                    bound = self._bound[td_id] = (pidns, mntns)
                except FileNotFoundError:
                    if first:  # the TD's agent: bind
                        self._bound[td_id] = ns
                        write_atomic(locations.registrations_dir() / f"{td_id}.peer",
                                     "\n".join(ns).encode())
                    return
        if ns != bound:
            raise PolicyDenied(f"the device of TD {td_id} answers only processes of that TD "
                               f"(pid {pid} is in other namespaces)", field="peer")

    def forget(self, td_id: str) -> None:
        with self._lock:
            self._bound.pop(td_id, None)
        try:
            os.unlink(self._file(td_id))
        except FileNotFoundError:
            pass
