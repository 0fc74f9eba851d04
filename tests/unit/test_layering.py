"""The zone boundaries of DESIGN.md, enforced on the source (AST), not by convention."""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

SRC = pathlib.Path(__file__).resolve().parents[2] / "src" / "arca"
STDLIB = set(sys.stdlib_module_names)


def imports_of(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[: -node.level])
                names.append(f"{pkg}.{node.module}" if node.module else pkg)
            elif node.module:
                names.append(node.module)
    return names


def files(zone: str) -> list[pathlib.Path]:
    return sorted((SRC / zone).rglob("*.py"))


@pytest.mark.parametrize("zone", ["guest", "wire"])
def test_tcb_imports_only_stdlib_cryptography_and_wire(zone: str) -> None:
    bad = []
    for f in files(zone):
        for name in imports_of(f):
            top = name.split(".")[0]
            allowed = (
                top in STDLIB
                or top == "cryptography"
                or name == "arca"
                or name.startswith("arca.wire")
                or (zone == "guest" and name.startswith("arca.guest"))
            )
            if not allowed:
                bad.append(f"{f.relative_to(SRC)} imports {name}")
    assert not bad, "\n".join(bad)


def test_host_never_imports_kbs() -> None:
    bad = [
        f"{f.relative_to(SRC)} imports {n}"
        for f in files("host")
        for n in imports_of(f)
        if n.startswith("arca.kbs")
    ]
    assert not bad, "\n".join(bad)


def test_verifier_and_kbs_never_import_host() -> None:
    bad = [
        f"{f.relative_to(SRC)} imports {n}"
        for zone in ("verifier", "kbs")
        for f in files(zone)
        for n in imports_of(f)
        if n.startswith("arca.host")
    ]
    assert not bad, "\n".join(bad)


def test_tcb_within_budget() -> None:
    sys.path.insert(0, str(SRC.parents[1] / "scripts"))
    import tcb_size

    total = sum(tcb_size.count(SRC.parents[1]).values())
    assert total <= tcb_size.BUDGET, f"TCB is {total} lines, budget {tcb_size.BUDGET}"
