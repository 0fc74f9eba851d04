"""``arca doctor``: which backends this host can run and, for each it cannot, every reason.

The answers come from the backends themselves (``Backend.host_problems``, the same checks
``check_host`` runs before ``arca-runtime create`` and ``arca run`` start anything), so the
doctor and the runtime can never disagree. What it does not do: change anything on the host.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BackendReport:
    name: str
    problems: tuple[str, ...]

    @property
    def available(self) -> bool:
        return not self.problems


def examine(names: tuple[str, ...] | None = None) -> list[BackendReport]:
    """One report per backend of this build (or per name in ``names``), in table order."""
    from arca.host import backends
    from arca.wire.tees import KNOWN_TEES, NONE

    out = []
    for name in names or tuple(t for t in KNOWN_TEES if t != NONE):
        if name not in KNOWN_TEES or name == NONE:
            backends.get(name)  # raises InvalidInput naming the known TEEs
        if not backends.available(name):
            out.append(BackendReport(name, ("this build has no backend that launches it",)))
            continue
        out.append(BackendReport(name, tuple(backends.get(name).host_problems())))
    return out


def host_facts() -> dict[str, Any]:
    """What the reports were made on (for a bug report)."""
    uname = platform.uname()
    return {"kernel": uname.release, "machine": uname.machine,
            "kvm": os.path.exists("/dev/kvm")}


def to_json(reports: list[BackendReport]) -> dict[str, Any]:
    return {"host": host_facts(),
            "backends": {r.name: {"available": r.available, "problems": list(r.problems)}
                         for r in reports}}
