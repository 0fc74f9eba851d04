"""The per-container monitor of ``arca run -d`` (like podman's conmon).

Started in its own session with stdio on the container's log file; supervises exactly one
container (:meth:`Engine.supervise`) and exits when it has exited and been cleaned up. Usage:
``python -m arca.host.containers.monitor <container-id>``.
"""

from __future__ import annotations

import sys

from arca.wire.errors import ArcaError


def main(argv: list[str]) -> int:
    from arca.host.containers.engine import Engine

    if len(argv) != 1:
        print("usage: python -m arca.host.containers.monitor <container-id>", file=sys.stderr)
        return 2
    try:
        Engine().supervise(argv[0], foreground=False)
    except ArcaError as e:
        print(f"arca-monitor: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
