"""``arca.host.backends.vm.assets.install`` unpacks the guest kernel package of Debian 12 and
of Debian 13: the same data directory from modules in ``/lib/modules`` (bookworm's packages)
or ``/usr/lib/modules`` (trixie's, merged ``/usr``). Real ``dpkg-deb``, ``zstd``, ``depmod``
on a tiny package built here."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest

from arca.errors import ConfigError
from arca.host.backends.vm import assets

RELEASE = "6.12.0-test-cloud-amd64"
pytestmark = pytest.mark.skipif(not all(shutil.which(t) for t in ("dpkg-deb", "zstd", "depmod")),
                                reason="needs dpkg-deb, zstd and depmod (scripts/setup.sh)")


def _deb(tmp: pathlib.Path, modules: str | None) -> pathlib.Path:
    root = tmp / f"pkg-{modules}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: linux-image-test\nVersion: 1.0\nArchitecture: amd64\n"
        "Maintainer: t <t@t>\nDescription: test\n")
    (root / "boot").mkdir()
    elf = subprocess.run(["zstd", "-q", "-c"], input=b"\x7fELF" + b"\0" * 60,
                         capture_output=True, check=True).stdout
    (root / "boot" / f"vmlinuz-{RELEASE}").write_bytes(b"MZ-stub" + elf + b"trailer")
    (root / "boot" / f"config-{RELEASE}").write_text("CONFIG_TEST=y\n")
    if modules is not None:
        d = root / modules / RELEASE / "kernel"
        d.mkdir(parents=True)
    out = tmp / f"{root.name}.deb"
    subprocess.run(["dpkg-deb", "-b", "-Zgzip", str(root), str(out)], check=True,
                   capture_output=True)
    return out


@pytest.mark.parametrize("modules", ["lib/modules", "usr/lib/modules"])
def test_both_module_layouts_give_the_same_data_dir(tmp_path: pathlib.Path, modules: str) -> None:
    dest = tmp_path / "data"
    assets.install(_deb(tmp_path, modules), dest)
    assert (dest / "lib" / "modules" / RELEASE / "kernel").is_dir()
    assert (dest / "lib" / "modules" / RELEASE / "modules.dep").exists()  # depmod ran
    assert (dest / "vmlinux").read_bytes().startswith(b"\x7fELF")
    assert json.loads((dest / "kernel.json").read_text()) == {
        "package": "linux-image-test 1.0", "release": RELEASE}


def test_a_package_without_modules_is_refused(tmp_path: pathlib.Path) -> None:
    dest = tmp_path / "data"
    with pytest.raises(ConfigError, match="expected the modules of"):
        assets.install(_deb(tmp_path, None), dest)
    assert not dest.exists()
