"""The read-only root filesystem image of a ``vm`` TD: erofs + a dm-verity hash tree, built on
the host once per image and shared read-only by every VM of that image.

``ensure_rootfs_image(rootfs)`` keys the cache by the tree digest of the container's rootfs
(:func:`arca.host.treedigest.rootfs_digest`, itself cached by overlay lower-layer identity, so
the 10th container of an image hashes and builds nothing): ``$ARCA_ROOT/vm/rootfs/<digest>.img``
is the erofs image followed by its hash tree, ``<digest>.json`` records the root hash and the
data size the guest needs. The root hash goes on the measured kernel command line; the guest
kernel then refuses (EIO) every block the host changes afterwards, so a corrupt or tampered
cache file is never silently accepted.

Determinism (same tree -> same root hash on another host) depends on: the tree digest's inputs
(path, type, mode, owner, size, content, symlink target, device numbers; not mtimes: erofs gets
``-T0``, a fixed UUID, and its directories are name-sorted by design), the erofs-utils version
(``mkfs.erofs -V``, recorded in the ``.json``; its on-disk layout may change between
releases), no salt and no verity superblock (``--no-superblock --salt=-``), 4 KiB blocks and
SHA-256. Extended attributes other than the ones erofs keeps by default are not part of the tree
digest; two trees differing only in those share an image.

What it does not do: garbage-collect images of deleted images (``rm`` of the cache directory is
safe while no VM runs), or compress (uncompressed erofs reads fastest under TCG).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import subprocess
import tempfile
from dataclasses import dataclass

from arca.host import paths
from arca.host.treedigest import rootfs_digest
from arca.wire.errors import ConfigError

#: Bump when the build recipe changes, so an old image is never reused under the same key.
BUILD_VERSION = "1"
BLOCK = 4096
ZERO_UUID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class RootfsImage:
    path: pathlib.Path
    root_hash: str  # hex SHA-256 dm-verity root hash
    data_blocks: int  # 4 KiB blocks of erofs data; the hash tree starts right after them

    def cmdline_value(self) -> str:
        return f"{self.root_hash}:{self.data_blocks}"


def cache_dir() -> pathlib.Path:
    return paths.root_dir() / "vm" / "rootfs"


def ensure_rootfs_image(rootfs: pathlib.Path, digest: str | None = None) -> RootfsImage:
    """The cached image for ``rootfs`` (a directory: a bundle rootfs or a mounted image)."""
    digest = digest or rootfs_digest(rootfs)
    key = f"{digest.replace(':', '-')}-v{BUILD_VERSION}"
    base = cache_dir()
    found = _load(base, key)
    if found is not None:
        return found
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build per key at a time; the others reuse it
        found = _load(base, key)
        if found is None:
            found = _build(rootfs, base, key)
    return found


def _load(base: pathlib.Path, key: str) -> RootfsImage | None:
    try:
        meta = json.loads((base / f"{key}.json").read_text())
        img = base / f"{key}.img"
        if img.exists():
            return RootfsImage(img, str(meta["root_hash"]), int(meta["data_blocks"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _run(argv: list[str]) -> str:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as e:
        raise ConfigError(f"cannot run {argv[0]}: {e.strerror} (run scripts/setup.sh)") from None
    if res.returncode != 0:
        last = (res.stderr.strip() or res.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise ConfigError(f"{argv[0]} failed: {last[0]}")
    return res.stdout


def _build(rootfs: pathlib.Path, base: pathlib.Path, key: str) -> RootfsImage:
    fd, tmp_name = tempfile.mkstemp(dir=base, prefix=".build-", suffix=".img")
    os.close(fd)
    tmp = pathlib.Path(tmp_name)
    try:
        # mkfs.erofs prints its version first; recorded because the layout depends on it.
        version = _run(["mkfs.erofs", "-T0", f"-U{ZERO_UUID}", str(tmp), str(rootfs)])
        version = (version.splitlines() or [""])[0].strip()
        size = tmp.stat().st_size
        if size % BLOCK:
            raise ConfigError(f"mkfs.erofs produced {size} bytes, not a multiple of {BLOCK}")
        out = _run(["veritysetup", "format", "--no-superblock", "--salt=-",
                    f"--hash-offset={size}", "--data-block-size=4096",
                    "--hash-block-size=4096", "--hash=sha256", str(tmp), str(tmp)])
        root_hash = next((line.split(":", 1)[1].strip() for line in out.splitlines()
                          if line.startswith("Root hash:")), "")
        if len(root_hash) != 64:
            raise ConfigError(f"veritysetup printed no root hash: {out.strip()[:200]}")
        os.chmod(tmp, 0o444)  # shared read-only by every VM of the image
        img = base / f"{key}.img"
        os.replace(tmp, img)
        meta = {"root_hash": root_hash, "data_blocks": size // BLOCK, "mkfs.erofs": version}
        meta_tmp = base / f".{key}.json.tmp"
        meta_tmp.write_text(json.dumps(meta) + "\n")
        os.replace(meta_tmp, base / f"{key}.json")
        return RootfsImage(img, root_hash, size // BLOCK)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
