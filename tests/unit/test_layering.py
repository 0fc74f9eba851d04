"""The zone boundaries of DESIGN.md, enforced on the source (AST), not by convention."""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

SRC = pathlib.Path(__file__).resolve().parents[2] / "src" / "arca"
#: CPython's C hash modules were renamed in 3.12 (_sha256/_sha512 -> _sha2): the TCB imports
#: whichever the guest's Python has (arca.wire.lean), so both count as stdlib on every version.
STDLIB = set(sys.stdlib_module_names) | {"_sha2", "_sha256", "_sha512"}


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


# -- The backend seam (ADR 0012): TEE names live in the backends, the table and the verifiers.

#: Names of TEEs (arca.wire.tees); a string constant equal to one of them is a TEE decision.
TEE_NAMES = ("sim", "vm", "tdx", "snp", "sgx", "sample")
#: Where a TEE may be named, each with why.
TEE_NAME_HOMES = {
    "host/backends/": "the backend modules and their registry (name -> module, default TEE)",
    "wire/tees.py": "the one table of per-TEE facts",
    "verifier/": "the verifiers, one module per TEE, and their registry",
}
TEE_NAME_EXCEPTIONS = {
    "wire/simreport.py": "the sim evidence format: 'tee' is a field of the signed report",
    "guest/evidence.py": "the sim device source's default TEE (its answers are sim reports); "
                         "the agent picks sources from the table and sets the TEE",
    "kbs/evidence.py": "the broker's sample verifier, and the verifiers enabled by flags named "
                       "after their TEE (--insecure-allow-sample, --trust-sim-root)",
    "kbs/service.py": "the Rego policies' data.config.allow_sim: whether this broker accepts "
                      "sim evidence (the default attestation policy reads it)",
    "cli/kbs_cmd.py": "the test client `arca kbs get-resource` makes sample evidence itself and "
                      "reads a sim device socket given by path",
    "demo.py": "`make demo` tells the sim story, naming the TEE on the command lines it shows",
    # Interop with CoCo/Trustee (per-TEE wire shapes their protocol defines, not Arca's choice):
    "wire/snpjson.py": "'snp' is a REPORTED_TCB component (the SNP firmware SVN) in Trustee's "
                       "JSON form of an SNP report, not a TEE decision",
    "kbs/evidence_formats.py": "CoCo guests' per-TEE evidence JSON shapes and report-data "
                               "padding (Trustee's verifiers), parsed before a verifier runs",
    "kbs/collateral.py": "which collateral each hardware verifier needs (Intel DCAP for "
                         "sgx/tdx, AMD KDS for snp) and the broker's start-up decision per TEE",
    "cli/verify_cmd.py": "`arca verify` recognises Trustee's per-TEE evidence documents by "
                         "shape (--tee auto) before any verifier is chosen",
}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def tee_names_in(path: pathlib.Path, root: pathlib.Path = SRC) -> list[str]:
    """``file:line 'name'`` for each string constant (not a docstring) that is a TEE's name."""
    tree = ast.parse(path.read_text(), str(path))
    docs = _docstrings(tree)
    return [f"{path.relative_to(root)}:{node.lineno} {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value in TEE_NAMES and id(node) not in docs]


def _allowed(rel: str) -> bool:
    return rel in TEE_NAME_EXCEPTIONS or any(rel.startswith(h) for h in TEE_NAME_HOMES)


def test_tee_names_only_in_backends_table_verifiers_and_listed_exceptions() -> None:
    bad = [hit for f in sorted(SRC.rglob("*.py"))
           if not _allowed(f.relative_to(SRC).as_posix()) for hit in tee_names_in(f)]
    assert not bad, ("TEE named outside its backend, the table (arca.wire.tees) and the "
                     "verifiers; ask the backend or the table instead:\n" + "\n".join(bad))


def test_the_exceptions_are_still_needed() -> None:
    """An exception that no longer names a TEE goes, so the list stays the truth."""
    stale = [rel for rel in TEE_NAME_EXCEPTIONS if not tee_names_in(SRC / rel)]
    assert not stale, f"no TEE named any more in {stale}: drop them from TEE_NAME_EXCEPTIONS"


def test_the_name_check_catches_a_tee_decision(tmp_path: pathlib.Path) -> None:
    f = SRC / "host" / "runtime" / "lifecycle.py"
    assert not tee_names_in(f)  # the runtime asks its backend
    bad = tmp_path / "x.py"
    bad.write_text('"""sim in a docstring is prose."""\nif tee == "sim":\n    pass\n')
    assert tee_names_in(bad, tmp_path) == ["x.py:2 'sim'"]


def test_backend_modules_are_reached_only_through_the_registry() -> None:
    """Nothing outside ``arca.host.backends`` imports a backend module (only ``base`` and the
    registry), so no caller can bypass ``backends.get`` or import every backend."""
    from arca.host import backends

    modules = set(backends._MODULES.values())
    bad = [f"{f.relative_to(SRC)} imports {n}" for f in sorted(SRC.rglob("*.py"))
           if not f.relative_to(SRC).as_posix().startswith("host/backends/")
           for n in imports_of(f) if n in modules]
    assert not bad, "\n".join(bad)


def test_registry_and_table_agree() -> None:
    from arca.host import backends
    from arca.wire import tees

    assert set(backends.names()) <= {n for n, t in tees.TEES.items() if t.container}
    assert backends.DEFAULT in backends.names()
    for name in backends.names():
        backend = backends.get(name)
        assert backend.name == name and backend.facts is tees.get(name)


def test_asking_for_one_backend_imports_no_other() -> None:
    """The runtime's hot path imports the backend it launches with, not all of them."""
    import subprocess

    code = ("import sys; from arca.host import backends; backends.get(backends.DEFAULT); "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('arca.host.backends'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    from arca.host import backends

    assert out == sorted(["arca.host.backends", "arca.host.backends.base",
                          backends._MODULES[backends.DEFAULT]])
