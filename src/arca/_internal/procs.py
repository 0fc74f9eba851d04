"""Whether a process exists, for the engine, its records and ``arca ps`` alike (only ``os``
is imported: ``arca ps`` and the lean ``arca run`` path use it)."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists: signal 0 reaches it, or it is another user's (EPERM).
    ``pid <= 0`` names no single process (kill would signal a group), so it is not alive."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
