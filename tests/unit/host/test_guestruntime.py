"""Guest runtime builder: contents, reuse, rebuild triggers, concurrent builders."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import arca
from arca.host import _guest_build, guestruntime
from arca.host.guestruntime import GuestRuntime, ensure_guest_runtime
from arca.host.treedigest import tree_digest

pytestmark = pytest.mark.skipif(shutil.which("ldd") is None, reason="needs ldd")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, GuestRuntime]:
    root = tmp_path_factory.mktemp("arca-root")
    return root, ensure_guest_runtime(root)


def test_layout_and_agent_command(built) -> None:
    _, gr = built
    py = _guest_build.PYVER
    for rel in ("bin/python3", "bin/arca-evidence", f"lib/{gr.loader}",
                f"lib/{py}/os.py", f"lib/{py}/arca/guest/agent.py",
                f"lib/{py}/arca/wire/initdata.py", f"lib/{py}/cryptography/__init__.py",
                f"lib/{py}/lib-dynload", f"lib/{py}/encodings/idna.py"):
        assert (gr.path / rel).exists(), rel
    assert gr.agent_args() == [f"/.arca/lib/{gr.loader}", "--library-path", "/.arca/lib",
                               "/.arca/bin/python3", "-I", "-S", "-B", "-c",
                               "import gc; gc.disable(); import sys; "
                               "from arca.guest.agent import main; sys.exit(main())"]
    # Trimmed: nothing the guest does not import.
    for absent in ("tkinter", "test", "unittest", "sqlite3", "asyncio", "pydoc_data", "idlelib",
                   "site-packages", "arca/host", "arca/kbs", "arca/verifier", "arca/cli"):
        assert not (gr.path / "lib" / py / absent).exists(), absent


def test_digest_is_the_tree_digest(built) -> None:
    _, gr = built
    assert gr.digest == tree_digest(gr.path)


def test_pyc_files_are_hash_based_and_unchecked(built) -> None:
    _, gr = built
    pycs = list(gr.path.rglob("*.pyc"))
    assert pycs
    for pyc in pycs:
        flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
        assert flags == 0b01, pyc  # hash-based, source not checked: no mtimes inside
        source = pyc.parent.parent / (pyc.name.split(".")[0] + ".py")
        assert source.exists(), pyc


def test_fast_path_reuses_the_build(built, monkeypatch: pytest.MonkeyPatch) -> None:
    root, gr = built

    def no_build(*_a) -> None:
        raise AssertionError("rebuilt although nothing changed")

    monkeypatch.setattr(_guest_build, "publish", no_build)
    assert ensure_guest_runtime(root) == gr


def test_interrupted_build_is_redone(tmp_path: pathlib.Path, built) -> None:
    _, gr = built
    first = ensure_guest_runtime(tmp_path)
    meta = tmp_path / "guest-runtime" / f"{first.path.name}.json"
    meta.write_text("{truncated")  # a crash between rename and meta write looks like this
    again = ensure_guest_runtime(tmp_path)
    assert again.digest == gr.digest and json.loads(meta.read_text())["digest"] == gr.digest
    assert not list((tmp_path / "guest-runtime").glob(".build-*"))


def test_fingerprint_follows_guest_sources(tmp_path: pathlib.Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "arca"
    for zone in ("guest", "wire"):
        (fake / zone).mkdir(parents=True)
        (fake / zone / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    monkeypatch.setattr(arca, "__file__", str(fake / "__init__.py"))
    before = guestruntime._fingerprint()
    assert guestruntime._fingerprint() == before
    (fake / "guest" / "agent.py").write_text("x = 1\n")
    after_add = guestruntime._fingerprint()
    assert after_add != before
    (fake / "guest" / "agent.py").write_text("x = 22\n")
    assert guestruntime._fingerprint() != after_add


def test_site_packages_found_without_importing_cryptography() -> None:
    site = guestruntime.site_packages()
    spec = importlib.util.find_spec("cryptography")
    assert spec is not None and spec.origin is not None
    assert pathlib.Path(spec.origin).resolve().is_relative_to(site)


def test_concurrent_builders_produce_one_runtime(tmp_path: pathlib.Path, built) -> None:
    _, gr = built
    code = ("import pathlib, sys; from arca.host.guestruntime import ensure_guest_runtime; "
            "print(ensure_guest_runtime(pathlib.Path(sys.argv[1])).digest)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    digests = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert digests == {gr.digest}
    dirs = [p for p in (tmp_path / "guest-runtime").iterdir() if p.is_dir()]
    assert len(dirs) == 1


@pytest.mark.parametrize("line,name,path", [
    ("\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f28adc15000)", "libc.so.6",
     "/lib/x86_64-linux-gnu/libc.so.6"),
    ("\t/lib64/ld-linux-x86-64.so.2 (0x00007f28ae3ce000)", "/lib64/ld-linux-x86-64.so.2", None),
])
def test_ldd_lines(line: str, name: str, path: str | None) -> None:
    m = _guest_build._LDD_LINE.match(line)
    assert m and m.group(1) == name and m.group(2) == path
    assert _guest_build._LDD_LINE.match("\tlinux-vdso.so.1 (0x00007ffd)") is not None
    assert _guest_build._LDD_LINE.match("\tlibfoo.so => not found") is None


def test_runtime_runs_outside_the_host_python(built, tmp_path: pathlib.Path) -> None:
    # The shipped interpreter, loader and libraries alone run the guest code (no venv, no
    # host stdlib): isolated mode finds the prefix from the executable's location.
    _, gr = built
    lib = gr.path / "lib"
    res = subprocess.run([str(lib / gr.loader), "--library-path", str(lib),
                          str(gr.path / "bin" / "python3"), "-I", "-S", "-B", "-c",
                          "import sys, arca.guest.agent, arca.guest.kbs_client; "
                          "print(sys.prefix)"],
                         capture_output=True, text=True, env={"PYTHONPATH": "/nonexistent"},
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(gr.path)
    assert os.environ.get("VIRTUAL_ENV", "") not in res.stdout or not os.environ.get("VIRTUAL_ENV")
