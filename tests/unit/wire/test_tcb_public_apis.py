"""The TCB (``arca.guest`` + ``arca.wire``) uses no private API of CPython or of a dependency
(STYLE.md, ADR 0054): no ``_``-prefixed module in any import path (``_json``, ``_socket``,
``cryptography.hazmat.bindings._rust``), no ``_``-prefixed name imported from a module outside
Arca (``_compare_digest``)."""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[3] / "src" / "arca"
TCB = sorted([*(SRC / "guest").rglob("*.py"), *(SRC / "wire").rglob("*.py")])


def private_uses(path: pathlib.Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
            names: list[str] = []
        elif isinstance(node, ast.ImportFrom) and not node.level:
            mods = [node.module or ""]
            names = [a.name for a in node.names] if not mods[0].startswith("arca") else []
        else:
            continue
        bad = [m for m in mods if any(p.startswith("_") and p != "__future__"
                                      for p in m.split("."))]
        bad += [n for n in names if n.startswith("_")]
        out += [f"{path.relative_to(SRC)}:{node.lineno} {b}" for b in bad]
    return out


@pytest.mark.parametrize("path", TCB, ids=lambda p: str(p.relative_to(SRC)))
def test_no_private_api_in_the_tcb(path: pathlib.Path) -> None:
    assert private_uses(path) == []


def test_the_check_catches_private_imports(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("import _socket\nfrom _operator import _compare_digest\n"
                 "from cryptography.hazmat.bindings._rust import openssl\n"
                 "from hmac import compare_digest\nfrom arca.wire.kbs_protocol import _obj\n")
    global SRC
    old, SRC = SRC, tmp_path
    try:
        assert [u.split(" ", 1)[1] for u in private_uses(f)] == [
            "_socket", "_operator", "_compare_digest", "cryptography.hazmat.bindings._rust"]
    finally:
        SRC = old
