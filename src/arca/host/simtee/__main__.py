"""``python -m arca.host.simtee serve``: how ``arca-runtime`` starts the daemon.

A separate entry point from ``arca simtee serve`` so an automatic start pays neither the
``arca`` CLI's imports nor its argument parser.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        print("usage: python -m arca.host.simtee serve", file=sys.stderr)
        sys.exit(2)
    from arca.host.simtee.daemon import serve

    sys.exit(serve())
