"""The ``vm`` guest's initramfs, built reproducibly from the guest runtime, busybox and the
kernel modules the guest needs, once per input and cached under ``$ARCA_ROOT/vm/initramfs``.

Content (all of it is the TD's code, listed with digests in ``<key>.json`` and docs/vm.md):

* ``/init``: three lines of ``sh`` that exec ``arca.guest.vminit`` with the guest runtime's
  interpreter (the kernel runs ``/init`` as PID 1);
* ``/bin/busybox`` (busybox-static): ``insmod``, ``mount`` and ``poweroff``, which the standard
  library cannot do; nothing else of busybox is called;
* ``/.arca``: the guest runtime (:mod:`arca.host.guestruntime`: interpreter, trimmed stdlib,
  ``cryptography``, ``arca.guest``/``arca.wire``), the tree the ``sim`` TD mounts with the
  debug sections of its ELF files stripped;
* ``/lib/modules/*.ko`` (decompressed from the kernel package) and ``/lib/modules/order``;
  for ``vm`` without the signature Debian appends to each module (:func:`unsigned`).

Reproducible: newc cpio written here (not by ``cpio``), entries sorted by path, mtime 0, owner
root, modes normalized, inode numbers assigned in order, no compression (a compressed initramfs
costs the guest seconds to unpack under TCG). The digest is SHA-256 of the file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import lzma
import os
import pathlib
import stat
import subprocess
import tempfile

from arca.host import paths
from arca.host.backends.vm.assets import BUSYBOX, Kernel
from arca.host.guestruntime import GuestRuntime
from arca.wire.constants import GUEST_RUNTIME_MOUNT
from arca.wire.errors import ConfigError

BUILD_VERSION = "5"
#: What the guest loads, in dependency order (modules.dep of the 6.12 cloud kernel):
#: virtio-mmio transport, the host's entropy (keys made before the kernel's own pool is ready
#: would block), block device, dm-verity, erofs, overlay for the writable layer, virtio-net.
MODULES = ("virtio_mmio", "virtio-rng", "virtio_blk", "dm-mod", "dm-bufio", "reed_solomon",
           "dm-verity", "libcrc32c", "erofs", "overlay", "failover", "net_failover",
           "virtio_net", "configfs", "tsm", "tdx-guest", "sev-guest")
#: Only a guest whose TEE gives evidence through configfs-tsm (tdx, snp) needs these ("?" in
#: ``order``): it loads them once its measured descriptor names that TEE (a plain ``vm`` guest
#: saves ~0.3 s under TCG). Each provider loads only in its own TEE's guest (elsewhere insmod
#: says ENODEV), so the guest tries them and goes on; no configfs-tsm is the agent's error.
OPTIONAL_MODULES = ("configfs", "tsm", "tdx-guest", "sev-guest")
#: What the kernel appends to a signed module (include/linux/module_signature.h): the
#: signature, a 12-byte ``struct module_signature`` ending in its big-endian length, this.
SIG_MAGIC = b"~Module signature appended~\n"
INIT = (b"#!/bin/busybox sh\n"
        b"# Arca vm guest: everything else is arca.guest.vminit (docs/vm.md).\n"
        b"exec /.arca/lib/ld-linux-x86-64.so.2 --library-path /.arca/lib /.arca/bin/python3 "
        b"-I -S -B -c 'from arca.guest.vminit import main; main()'\n")


class Initramfs:
    def __init__(self, path: pathlib.Path, digest: str) -> None:
        self.path, self.digest = path, digest


def cache_dir() -> pathlib.Path:
    return paths.root_dir() / "vm" / "initramfs"


def _module_files(kernel: Kernel) -> list[tuple[str, pathlib.Path]]:
    deps: dict[str, str] = {}
    for line in (kernel.modules / "modules.dep").read_text().splitlines():
        rel = line.partition(":")[0]
        name = os.path.basename(rel).split(".ko")[0]
        deps[name.replace("-", "_")] = rel
    out = []
    for m in MODULES:
        found = deps.get(m.replace("-", "_"))
        if found is None:
            raise ConfigError(f"guest kernel {kernel.release} has no module {m}")
        out.append((m, kernel.modules / found))
    return out


def _key(gr: GuestRuntime, kernel: Kernel, strip_signatures: bool) -> str:
    h = hashlib.sha256(f"{BUILD_VERSION}\0{gr.digest}\0{kernel.package}\0"
                       f"{int(strip_signatures)}\0".encode())
    h.update(INIT)
    st = os.stat(BUSYBOX)
    h.update(f"{st.st_size}\0{st.st_mtime_ns}\0{','.join(MODULES)}".encode())
    return h.hexdigest()[:32]


def ensure_initramfs(gr: GuestRuntime, kernel: Kernel, *, strip_signatures: bool = False
                     ) -> Initramfs:
    """The cached initramfs for ``gr`` and ``kernel``, built if needed. ``strip_signatures``
    (the ``vm`` backend): modules without their appended signatures (:func:`unsigned`)."""
    base = cache_dir()
    key = _key(gr, kernel, strip_signatures)
    found = _load(base, key)
    if found:
        return found
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _load(base, key)
        if found is None:
            found = _build(gr, kernel, base, key, strip_signatures)
    return found


def _load(base: pathlib.Path, key: str) -> Initramfs | None:
    try:
        meta = json.loads((base / f"{key}.json").read_text())
        img = base / f"{key}.cpio"
        return Initramfs(img, str(meta["digest"])) if img.exists() else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def unsigned(module: bytes) -> bytes:
    """``module`` without its appended signature (unchanged if it has none): the bytes the
    kernel itself loads after checking it. The check adds nothing in a TD, whose initramfs is
    measured as a whole, and costs ~90 ms of emulated RSA per module under TCG (1.4 s of every
    ``vm`` boot, measured: docs/vm.md "Performance"); an unsigned module taints the kernel
    ("E") and loads, as ``CONFIG_MODULE_SIG_FORCE`` is off and nothing locks the ``vm`` guest
    down. Not for ``tdx``/``snp``, whose firmware's Secure Boot may lock the kernel down."""
    if not module.endswith(SIG_MAGIC):
        return module
    end = len(module) - len(SIG_MAGIC)
    sig_len = int.from_bytes(module[end - 4:end], "big")
    cut = end - 12 - sig_len
    if cut <= 0:
        raise ConfigError("malformed module signature trailer")
    return module[:cut]


def entries(gr: GuestRuntime, kernel: Kernel, strip_signatures: bool = False
            ) -> dict[str, tuple[int, bytes, int]]:
    """path -> (mode, content or symlink target, rdev) of every initramfs entry."""
    d, f, lnk = stat.S_IFDIR | 0o755, stat.S_IFREG, stat.S_IFLNK | 0o777
    out: dict[str, tuple[int, bytes, int]] = {}
    for name in ("bin", "dev", "proc", "sys", "lib", "lib/modules", "newroot", "lower", "rw",
                 "run", "tmp"):
        out[name] = (d, b"", 0)
    out["dev/console"] = (stat.S_IFCHR | 0o600, b"", os.makedev(5, 1))
    # The interpreter seeds its hash from /dev/urandom before /init can mount devtmpfs.
    out["dev/urandom"] = (stat.S_IFCHR | 0o444, b"", os.makedev(1, 9))
    out["dev/null"] = (stat.S_IFCHR | 0o666, b"", os.makedev(1, 3))
    out["init"] = (f | 0o755, INIT, 0)
    out["bin/busybox"] = (f | 0o755, pathlib.Path(BUSYBOX).read_bytes(), 0)
    out["bin/sh"] = (lnk, b"busybox", 0)
    order = []
    for name, path in _module_files(kernel):
        raw = path.read_bytes()
        if path.name.endswith(".xz"):
            raw = lzma.decompress(raw)
        if strip_signatures:
            raw = unsigned(raw)
        out[f"lib/modules/{name}.ko"] = (f | 0o644, raw, 0)
        order.append(("?" if name in OPTIONAL_MODULES else "") + f"{name}.ko")
    out["lib/modules/order"] = (f | 0o644, ("\n".join(order) + "\n").encode(), 0)
    top = GUEST_RUNTIME_MOUNT.strip("/")
    root = pathlib.Path(gr.path)
    out[top] = (d, b"", 0)
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = os.path.normpath(os.path.join(top, rel_dir, n))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = (lnk, os.readlink(p).encode(), 0)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = (d, b"", 0)
            else:
                mode = 0o755 if st.st_mode & 0o111 else 0o644
                data = pathlib.Path(p).read_bytes()
                out[rel] = (f | mode, _strip_debug(data) if data[:4] == b"\x7fELF" else data, 0)
    return out


def _strip_debug(elf: bytes) -> bytes:
    """``elf`` without debug sections (a pyenv libpython carries 17 MB of them). Size matters
    twice: guest RAM, and an initramfs above ~65.6 MB made this kernel hang at "ACPI: Core
    revision" under microvm's direct boot (seen here; a compressed one costs 12 s to unpack
    under TCG). ``strip`` is deterministic; the code and dynamic symbols are untouched."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in"), os.path.join(tmp, "out")
        pathlib.Path(src).write_bytes(elf)
        res = subprocess.run(["strip", "--strip-debug", "-o", dst, src], capture_output=True,
                             check=False)
        return pathlib.Path(dst).read_bytes() if res.returncode == 0 else elf


def write_cpio(items: dict[str, tuple[int, bytes, int]], out: pathlib.Path) -> str:
    """newc archive of ``items`` (sorted, mtime 0, uid/gid 0); returns its SHA-256 digest."""
    h = hashlib.sha256()
    with open(out, "wb") as fh:
        def put(data: bytes) -> None:
            fh.write(data)
            h.update(data)

        for ino, (name, (mode, data, rdev)) in enumerate(
                [*sorted(items.items()), ("TRAILER!!!", (0, b"", 0))], start=1):
            nb = name.encode() + b"\0"
            fields = (ino if name != "TRAILER!!!" else 0, mode, 0, 0, 1 if mode else 0, 0,
                      len(data), 0, 0, os.major(rdev), os.minor(rdev), len(nb), 0)
            hdr = b"070701" + b"".join(b"%08x" % v for v in fields)
            put(hdr + nb + b"\0" * ((4 - (len(hdr) + len(nb)) % 4) % 4))
            put(data + b"\0" * ((4 - len(data) % 4) % 4))
        # Zeros to a whole page (the kernel skips them, also between concatenated archives).
        # microvm loads the initrd at the top of RAM, over the ACPI tables in the last page, by
        # ``size % 4096`` bytes: a 46,521,948-byte archive overwrote a table header and the
        # guest spent 160 s under TCG checksumming a 555 MB "table" (seen here). Whole pages
        # end the initrd one page below the top, whatever the content.
        put(bytes(-fh.tell() % 4096))
    return "sha256:" + h.hexdigest()


def _build(gr: GuestRuntime, kernel: Kernel, base: pathlib.Path, key: str,
           strip_signatures: bool) -> Initramfs:
    items = entries(gr, kernel, strip_signatures)
    tmp = base / f".{key}.cpio.tmp"
    digest = write_cpio(items, tmp)
    os.chmod(tmp, 0o444)
    os.replace(tmp, base / f"{key}.cpio")
    listing = {p: hashlib.sha256(c).hexdigest() for p, (m, c, _) in sorted(items.items())
               if stat.S_ISREG(m) and not p.startswith(GUEST_RUNTIME_MOUNT.strip("/") + "/")}
    meta = {"digest": digest, "kernel": kernel.package, "guest_runtime": gr.digest,
            "module_signatures": "stripped" if strip_signatures else "kept", "files": listing}
    (base / f".{key}.json.tmp").write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(base / f".{key}.json.tmp", base / f"{key}.json")
    return Initramfs(base / f"{key}.cpio", digest)
