"""Report the size of Arca's TCB: non-blank, non-comment lines of arca.guest + arca.wire."""

from __future__ import annotations

import pathlib
import sys

BUDGET = 2000


def count(root: pathlib.Path) -> dict[str, int]:
    out = {}
    for pkg in ("guest", "wire"):
        for f in sorted((root / "src" / "arca" / pkg).rglob("*.py")):
            lines = f.read_text().splitlines()
            out[str(f.relative_to(root))] = sum(
                1 for ln in lines if ln.strip() and not ln.strip().startswith("#")
            )
    return out


if __name__ == "__main__":
    root = pathlib.Path(__file__).resolve().parent.parent
    sizes = count(root)
    for name, n in sizes.items():
        print(f"{n:6d}  {name}")
    total = sum(sizes.values())
    print(f"{total:6d}  total (budget {BUDGET})")
    sys.exit(0 if total <= BUDGET else 1)
