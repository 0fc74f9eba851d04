"""Arca uses no private API of CPython or of a dependency (STYLE.md; ADR 0054 for the TCB,
ADR 0056 for all of ``src/arca``). Read from the AST of every module, including imports under
``TYPE_CHECKING``:

- an import of a ``_``-prefixed module or submodule outside Arca (``_json``, ``_socket``,
  ``cryptography.hazmat.bindings._rust``, ``_typeshed``), also through ``importlib.import_module``
  or ``__import__`` with a literal name;
- a ``_``-prefixed name imported from outside Arca (``from _operator import _compare_digest``,
  ``from typing import _GenericAlias``);
- a ``_``-prefixed attribute of a module imported from outside Arca (``hashlib._Hash``,
  ``sys._getframe``);
- in a class with a base from outside Arca: a ``super()._x(...)`` call, a method ``_x``
  defined over one the base already has (a library class's private hook; the base is
  imported to see its attributes), or ``self._x`` read where the class never sets or
  defines ``_x`` (the base's private state).

Dunder names (``__future__``, ``__version__``) are public. :data:`ALLOWED` is the explicit,
justified exception list (each entry is argued in ADR 0056)."""

from __future__ import annotations

import ast
import importlib
import pathlib

SRC = pathlib.Path(__file__).resolve().parents[2] / "src" / "arca"

#: name -> why (ADR 0056). An entry that no longer occurs fails the test: the list only shrinks.
ALLOWED = {
    "os._exit": "documented public API (Python docs, os, Process Management): the underscore "
                "marks an exit without clean-up, not a private name",
    "tarfile.TarInfo._proc_member": "the only hook that sees a tar member's header before "
                                    "tarfile reads its extended header into memory; bounded "
                                    "by host/images/unpack.py, pinned by test_images_bombs",
    "tarfile.TarInfo._proc_gnusparse_10": "the same hook for PAX 1.0 sparse maps (unbounded, "
                                          "in the data), refused; pinned by test_images_bombs",
}


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _private_path(module: str) -> bool:
    return any(_private(p) for p in module.split("."))


def _outside(module: str) -> bool:
    return module.split(".")[0] != "arca"


def _resolve(dotted: str) -> object:
    """The object ``dotted`` names (``tarfile.TarInfo``), or None."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
        return obj
    return None


class _Scan(ast.NodeVisitor):
    def __init__(self) -> None:
        self.found: list[tuple[int, str]] = []
        #: local name -> the dotted name it was imported as, for names from outside Arca
        self.external: dict[str, str] = {}
        self.bases: list[list[str]] = []

    def report(self, node: ast.AST, what: str) -> None:
        self.found.append((getattr(node, "lineno", 0), what))

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if not _outside(a.name):
                continue
            if _private_path(a.name):
                self.report(node, a.name)
            if a.asname:
                self.external[a.asname] = a.name
            else:
                self.external[a.name.split(".")[0]] = a.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level or not _outside(module):
            return
        if _private_path(module):
            self.report(node, module)
        for a in node.names:
            if _private(a.name):
                self.report(node, f"{module}.{a.name}")
            self.external[a.asname or a.name] = f"{module}.{a.name}"

    def dotted(self, node: ast.expr) -> str | None:
        """The outside-Arca dotted name ``node`` spells (``tarfile.TarInfo``), if any."""
        if isinstance(node, ast.Name):
            return self.external.get(node.id)
        if isinstance(node, ast.Attribute):
            head = self.dotted(node.value)
            return f"{head}.{node.attr}" if head else None
        return None

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if _private(node.attr):
            head = self.dotted(node.value)
            if head:
                self.report(node, f"{head}.{node.attr}")
            elif (isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                  and node.value.func.id == "super"):
                for base in (self.bases[-1] if self.bases else []):
                    self.report(node, f"{base}.{node.attr}")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = self.dotted(node.func) or (node.func.id if isinstance(node.func, ast.Name)
                                         else None)
        if (name in ("importlib.import_module", "__import__") and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and _outside(node.args[0].value) and _private_path(node.args[0].value)):
            self.report(node, node.args[0].value)
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.bases.append([d for b in node.bases if (d := self.dotted(b))])
        for item in node.body:
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and _private(item.name):
                for base in self.bases[-1]:
                    if hasattr(_resolve(base), item.name):
                        self.report(item, f"{base}.{item.name}")
        if self.bases[-1]:
            # ``self._x`` read but never set nor defined here: the library base's own
            mine = {i.name for i in node.body if isinstance(
                i, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)} | {
                t.id for i in node.body if isinstance(i, ast.Assign | ast.AnnAssign)
                for t in (i.targets if isinstance(i, ast.Assign) else [i.target])
                if isinstance(t, ast.Name)}
            used: dict[str, ast.Attribute] = {}
            for a in ast.walk(node):
                if (isinstance(a, ast.Attribute) and isinstance(a.value, ast.Name)
                        and a.value.id == "self" and _private(a.attr)):
                    if isinstance(a.ctx, ast.Store | ast.Del):
                        mine.add(a.attr)
                    else:
                        used.setdefault(a.attr, a)
            for attr, a in used.items():
                if attr not in mine:
                    for base in self.bases[-1]:
                        self.report(a, f"{base}.{attr}")
        self.generic_visit(node)
        self.bases.pop()


def private_uses(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, dotted name) of each private API ``path`` uses."""
    tree = ast.parse(path.read_text(), str(path))
    # imports first, wherever they are (a function's local import binds before its use)
    scan = _Scan()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            scan.visit(node)
    scan.found.clear()
    scan.visit(tree)
    return scan.found


def test_src_uses_no_private_api_beyond_the_allow_list() -> None:
    found = {f"{p.relative_to(SRC)}:{line} {what}": what
             for p in sorted(SRC.rglob("*.py")) for line, what in private_uses(p)}
    assert [k for k, what in found.items() if what not in ALLOWED] == []
    assert sorted(set(ALLOWED) - set(found.values())) == []  # no stale entry


def test_the_tcb_needs_no_allow_list_entry_but_os_exit() -> None:
    tcb = [*(SRC / "guest").rglob("*.py"), *(SRC / "wire").rglob("*.py")]
    assert {what for p in tcb for _, what in private_uses(p)} <= {"os._exit"}


def test_the_check_catches_private_apis(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "x.py"
    f.write_text(
        "import _socket\nfrom _operator import _compare_digest\n"
        "from cryptography.hazmat.bindings._rust import openssl\n"
        "import hashlib, sys as system, importlib\nimport os.path as osp\n"
        "from hmac import compare_digest\nfrom arca.wire.kbs_protocol import _obj\n"
        "from __future__ import annotations\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from _typeshed import StrPath\n"
        "def f(h: hashlib._Hash) -> None:\n"
        "    import tarfile\n    system._getframe(0)\n    osp._joinrealpath\n"
        "    importlib.import_module('_json')\n    __import__('encodings._x')\n"
        "    importlib.import_module('json')\n    hashlib.sha256, os.__name__, _obj._x\n"
        "    class T(tarfile.TarInfo):\n"
        "        def _proc_member(self, tf):\n            return super()._proc_member(tf)\n"
        "        def _mine(self):\n            pass\n"
        "class Mine:\n    def _y(self):\n        return super()._y()\n"
        "import asyncio\nclass P(asyncio.Protocol):\n    _k = 1\n"
        "    def __init__(self):\n        self._t = None\n"
        "    def go(self):\n        return self._t, self._k, self._go(), self._loop\n"
        "    def _go(self):\n        return 1\n")
    assert [w for _, w in private_uses(f)] == [
        "_socket", "_operator", "_operator._compare_digest",
        "cryptography.hazmat.bindings._rust", "_typeshed", "hashlib._Hash",
        "sys._getframe", "os.path._joinrealpath", "_json", "encodings._x",
        "tarfile.TarInfo._proc_member", "tarfile.TarInfo._proc_member",
        "asyncio.Protocol._loop"]
