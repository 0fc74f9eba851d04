"""The host parts a ``vm`` launch needs, and where they live: QEMU, the guest kernel and its
modules (installed by ``scripts/setup.sh`` into :func:`data_dir`), busybox, erofs-utils and
veritysetup.

The guest kernel is Debian's stock cloud kernel, used as shipped (Arca builds no kernel):
``setup.sh`` downloads the package with ``apt-get download`` (it is never installed as the
host's kernel) and runs ``python -m arca.host.backends.vm.assets install DEB`` which unpacks it,
pulls the uncompressed PVH ``vmlinux`` out of the bzImage (microvm boots it directly, ~2 s
faster under TCG than the bzImage: research file §6.4) and records the package version in
``kernel.json``. ADR 0015 says why this kernel and this QEMU.

What it does not do: choose between several kernels (one is installed at a time), or fetch
anything at run time.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from arca.wire.errors import ConfigError

#: zstd frame magic: the 6.12 cloud kernel's payload is zstd-compressed (CONFIG_KERNEL_ZSTD).
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
QEMU = "qemu-system-x86_64"
BUSYBOX = "/bin/busybox"


class VmUnavailable(ConfigError):
    """This host cannot launch a ``vm`` TD; the message names the missing part."""


def data_dir() -> pathlib.Path:
    """Kernel, modules and ``kernel.json``; shared by every ARCA_ROOT (read-only, root's)."""
    return pathlib.Path(os.environ.get("ARCA_VM_DATA", "/var/lib/arca-vm"))


class Kernel:
    """The installed guest kernel: ``vmlinux`` (PVH), ``lib/modules/`` and its package version."""

    def __init__(self, base: pathlib.Path) -> None:
        try:
            meta = json.loads((base / "kernel.json").read_text())
            self.release, self.package = str(meta["release"]), str(meta["package"])
        except (OSError, ValueError, KeyError, TypeError):
            raise VmUnavailable(f"no guest kernel installed in {base} (kernel.json missing or "
                                "unreadable): run scripts/setup.sh") from None
        self.base = base
        self.vmlinux = base / "vmlinux"
        self.modules = base / "lib" / "modules" / self.release
        for p in (self.vmlinux, self.modules / "modules.dep"):
            if not p.exists():
                raise VmUnavailable(f"guest kernel in {base} is incomplete: {p} missing; run "
                                    "scripts/setup.sh")


def qemu_binary() -> str:
    """``$ARCA_VM_QEMU`` when set (an ``ARCA_*`` setting reaches the sim daemon's fast
    ``create``, ``PATH`` does not), else ``qemu-system-x86_64`` on ``PATH``."""
    configured = os.environ.get("ARCA_VM_QEMU")
    if configured:
        if not os.access(configured, os.X_OK):
            raise VmUnavailable(f"QEMU {configured} (ARCA_VM_QEMU) is missing or not "
                                "executable")
        return os.path.realpath(configured)
    found = shutil.which(QEMU)
    if found is None:
        raise VmUnavailable(f"{QEMU} not found on PATH: run scripts/setup.sh")
    return os.path.realpath(found)


#: The distribution's virtiofsd (Debian 13 and later); Debian 12 has none (ADR 0042).
VIRTIOFSD = "/usr/libexec/virtiofsd"


def virtiofsd() -> pathlib.Path | None:
    """Where ``-v`` volumes' virtiofsd lives: None for the distribution's (:data:`VIRTIOFSD`,
    under the ``/usr`` every VMM container has), else the directory ``setup.sh`` fills on
    Debian 12 (trixie's binary, and its loader and libraries in ``lib/``)."""
    if os.access(VIRTIOFSD, os.X_OK):
        return None
    own = data_dir() / "virtiofsd"
    if not os.access(own / "virtiofsd", os.X_OK) or not (own / "lib").is_dir():
        raise VmUnavailable(f"volumes need virtiofsd ({VIRTIOFSD} or {own}/virtiofsd): run "
                            "scripts/setup.sh")
    return own


def check_host() -> Kernel:
    """Every part a ``vm`` launch needs, or :class:`VmUnavailable` naming the first missing."""
    qemu_binary()
    for tool in ("mkfs.erofs", "veritysetup"):
        if shutil.which(tool) is None:
            raise VmUnavailable(f"{tool} not found on PATH: run scripts/setup.sh")
    if not os.access(BUSYBOX, os.X_OK):
        raise VmUnavailable(f"{BUSYBOX} (busybox-static) missing: run scripts/setup.sh")
    return Kernel(data_dir())


def extract_pvh(bzimage: bytes) -> bytes:
    """The uncompressed ELF ``vmlinux`` inside a zstd bzImage (what ``extract-vmlinux`` does:
    find the first zstd frame and decompress it; the bytes after the frame are ignored)."""
    start = bzimage.find(_ZSTD_MAGIC)
    if start < 0:
        raise ConfigError("kernel image has no zstd payload (expected a 6.12 Debian kernel)")
    res = subprocess.run(["zstd", "-dcq"], input=bzimage[start:], capture_output=True,
                         check=False)
    # zstd exits 1 on the trailing non-zstd bytes after the payload; the ELF is complete.
    if not res.stdout.startswith(b"\x7fELF"):
        raise ConfigError(f"cannot decompress the kernel: {res.stderr.decode().strip()}")
    return res.stdout


def install(deb: pathlib.Path, dest: pathlib.Path) -> None:
    """Unpack a ``linux-image-*`` package into ``dest`` (replaced atomically)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        x = pathlib.Path(tmp) / "x"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(x)], check=True)
        package = " ".join(
            subprocess.run(["dpkg-deb", "-f", str(deb), field], check=True,
                           capture_output=True, text=True).stdout.strip()
            for field in ("Package", "Version"))
        bz = sorted((x / "boot").glob("vmlinuz-*"))
        if len(bz) != 1:
            raise ConfigError(f"{deb}: expected one vmlinuz, found {len(bz)}")
        release = bz[0].name.removeprefix("vmlinuz-")
        new = pathlib.Path(tmp) / "new"
        (new / "lib" / "modules").mkdir(parents=True)
        (new / "vmlinux").write_bytes(extract_pvh(bz[0].read_bytes()))
        # The EFI-stub bzImage as shipped: what OVMF/TDVF boot for tdx/snp guests.
        shutil.copy(bz[0], new / "vmlinuz")
        # Debian 12's packages ship the modules in /lib/modules, Debian 13's (merged /usr) in
        # /usr/lib/modules; the data directory keeps one layout.
        mods = [d for d in (x / "lib" / "modules" / release, x / "usr/lib/modules" / release)
                if d.is_dir()]
        if len(mods) != 1:
            raise ConfigError(f"{deb}: expected the modules of {release} in /lib/modules or "
                              f"/usr/lib/modules, found {len(mods)}")
        shutil.move(str(mods[0]), new / "lib" / "modules" / release)
        # The package ships no modules.dep (its postinst runs depmod): make it here.
        subprocess.run(["depmod", "-b", str(new), release], check=True)
        shutil.copy(x / "boot" / f"config-{release}", new / "config")
        (new / "kernel.json").write_text(json.dumps(
            {"package": package, "release": release}, indent=1) + "\n")
        old = pathlib.Path(tmp) / "old"
        if dest.exists():
            dest.rename(old)
        new.rename(dest)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "install":
        install(pathlib.Path(argv[1]), data_dir())
        print(f"guest kernel installed in {data_dir()}: {Kernel(data_dir()).package}")
        return 0
    print("usage: python -m arca.host.backends.vm.assets install LINUX-IMAGE.deb",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
