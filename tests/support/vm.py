"""Support for the ``vm`` backend's acceptance tests: whether this machine can launch a VM (and
why not), the files a ``vm`` container may leave behind, and a hostile ``runc``/runtime wrapper.

The checks look at what the host really has: QEMU processes (``qemu-system-x86_64`` anywhere
under the test's cgroups or naming the test's files), TD directories and sockets under
``ARCA_RUN``, rootfs/initramfs images under ``ARCA_ROOT/vm`` other than the shared caches,
mounts, cgroups, and the sim platform's registrations.
"""

from __future__ import annotations

import os
import pathlib
import stat
import sys

import pytest

QEMU_NAME = "qemu-system-x86_64"
RUNTIME = str(pathlib.Path(sys.executable).parent / "arca-runtime")
ARCA = str(pathlib.Path(sys.executable).parent / "arca")


def vm_unavailable() -> str | None:
    """``None`` when this host can launch a ``vm`` TD, else the backend's own reason (missing
    QEMU, kernel, tools: ``scripts/setup.sh`` installs them)."""
    if os.geteuid() != 0:
        return "the vm backend needs root"
    from arca.host.backends import get
    from arca.wire.errors import ConfigError

    try:
        get("vm").check_host()
    except ConfigError as e:
        return str(e)
    return None


def qemu_processes() -> list[tuple[int, str, str]]:
    """(pid, command line, cgroup) of every live QEMU on the host."""
    out = []
    for p in pathlib.Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            argv = (p / "cmdline").read_bytes().split(b"\0")
            if not argv or not argv[0].endswith(QEMU_NAME.encode()):
                continue
            cg = (p / "cgroup").read_text()
            stat_ = (p / "stat").read_bytes().rpartition(b")")[2].split()
        except OSError:
            continue
        if stat_ and stat_[0] in (b"Z", b"X"):
            continue
        out.append((int(p.name), b" ".join(argv).decode(errors="replace"), cg))
    return out


def qemu_of(text: str) -> list[int]:
    """Pids of QEMU processes whose cgroup path mentions ``text`` (a container id or a
    containerd namespace)."""
    return [pid for pid, _, cg in qemu_processes() if text in cg]


def open_rootfs_image(pid: int, timeout: float = 60) -> os.stat_result:
    """stat of the rootfs image QEMU ``pid`` has open (``/arca-vm/rootfs.img`` in its
    container): the file itself, whatever path it has on the host. QEMU opens its drives
    a moment after it starts: waits up to ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for fd in (pathlib.Path(f"/proc/{pid}/fd")).iterdir():
            try:
                if os.readlink(fd).endswith("rootfs.img"):
                    return os.stat(fd)
            except OSError:
                continue
        time.sleep(0.1)
    raise AssertionError(f"QEMU {pid} has no rootfs image open")


def sockets_under(root: pathlib.Path) -> list[str]:
    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            try:
                if stat.S_ISSOCK(os.lstat(p).st_mode):
                    out.append(p)
            except OSError:
                continue
    return out


def vm_images(arca_root: pathlib.Path) -> list[str]:
    """Disk images under ``ARCA_ROOT/vm`` (the shared rootfs and initramfs caches hold the
    only ones that may stay: ``<key>.img``/``<key>.cpio``, nothing temporary)."""
    base = arca_root / "vm"
    if not base.exists():
        return []
    return sorted(str(p.relative_to(base)) for p in base.rglob("*")
                  if p.is_file() and p.suffix in (".img", ".cpio", ".tmp", ".qcow2")
                  and p.relative_to(base).parts[0] != "vmm-root")  # empty mount points


def td_dirs(arca_run: pathlib.Path) -> list[str]:
    """What the runtime keeps per container under ``ARCA_RUN`` (state, TD directories)."""
    out = []
    for sub in ("containers", "td", "tds", "vm"):
        d = arca_run / sub
        if d.is_dir():
            out += [str(p) for p in d.iterdir()]
    return out


def needs_vm() -> pytest.MarkDecorator:
    """The skip mark of every vm test module: this host cannot boot a VM (the reason said)."""
    why = vm_unavailable()
    return pytest.mark.skipif(why is not None, reason=f"this host cannot run a VM: {why}")


def launch_editing_runc(path: pathlib.Path, edit: str) -> pathlib.Path:
    """A runc at ``path`` that, before it starts the container, runs ``edit`` (Python over
    ``doc``) on the launch the VMM reads — after the runtime's checks, as a hostile host
    would."""
    path.write_text(f"""#!{sys.executable}
import json, os, shutil, sys
args = sys.argv[1:]
if "--bundle" in args:
    cfg = json.load(open(os.path.join(args[args.index("--bundle") + 1], "config.json")))
    for m in cfg.get("mounts", []):
        if m.get("destination") == "/run/arca-vm":
            launch = os.path.join(m["source"], "launch.json")
            doc = json.load(open(launch))
            {edit}
            json.dump(doc, open(launch, "w"))
os.execv(shutil.which("runc"), ["runc", *args])
""")
    path.chmod(0o755)
    return path
