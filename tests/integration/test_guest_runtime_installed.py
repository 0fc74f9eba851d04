"""The guest runtime builds when Arca is installed as a regular package, i.e. inside the same
site-packages as ``cryptography`` (``pip install .``, a node install), not only from an
editable checkout: Arca's own modules there are Arca's, not a stray third-party package."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

import arca
from arca.host.guestruntime import site_packages

pytestmark = [pytest.mark.integration]


def test_the_guest_runtime_builds_from_an_installed_arca(tmp_path: pathlib.Path) -> None:
    site, real = tmp_path / "site-packages", site_packages()
    site.mkdir()
    for pkg in ("cryptography", "cffi"):
        shutil.copytree(real / pkg, site / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for so in real.glob("_cffi_backend*.so"):
        shutil.copy2(so, site / so.name)
    shutil.copytree(pathlib.Path(arca.__file__).parent, site / "arca",
                    ignore=shutil.ignore_patterns("__pycache__"))
    dest = tmp_path / "runtime"
    dest.mkdir()
    code = (f"import sys; sys.path.insert(0, {str(site)!r}); import pathlib; "
            "from arca.host._guest_build import build; "
            f"print(build(pathlib.Path({str(dest)!r})))")
    res = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    loader = res.stdout.strip()
    lib = dest / "lib"
    run = subprocess.run([str(lib / loader), "--library-path", str(lib),
                          str(dest / "bin" / "python3"), "-I", "-S", "-B", "-c",
                          "import arca.guest.agent, arca.guest.jwe as j; print(j.__file__)"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(str(dest))
