"""Issue 13, item 12: a local user cannot reach the setuid-root files and device nodes of
unpacked images. The attack: an image ships a setuid-root binary and a world-usable device
node; once ``arca run`` unpacked and mounted it, an unprivileged user (``setpriv`` to uid/gid
65534, no groups) tries to execute the binary and open the node from the store's layer
directories and from the container's mounted root filesystem. Also: directories an older
version left 0755 are tightened by the next ``arca`` command."""

from __future__ import annotations

import glob
import os
import pathlib
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from tests.support.arca_run import NEEDS_ROOT_RUNC_UMOCI, arca, arca_env
from tests.support.images import build_busybox_image, run

pytestmark = [pytest.mark.integration, NEEDS_ROOT_RUNC_UMOCI,
              pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv")]

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


def hostile_image(tmp: pathlib.Path) -> str:
    layout = tmp / "layout"
    ref = build_busybox_image(layout, "v1")
    bundle = tmp / "b"
    run("umoci", "unpack", "--image", ref, str(bundle))
    rootfs = bundle / "rootfs"
    shutil.copy2("/bin/busybox", rootfs / "bin" / "suid")
    os.chown(rootfs / "bin" / "suid", 0, 0)
    os.chmod(rootfs / "bin" / "suid", 0o4755)
    os.mknod(rootfs / "zero2", stat.S_IFCHR | 0o666, os.makedev(1, 5))
    os.chmod(rootfs / "zero2", 0o666)
    run("umoci", "repack", "--image", ref, str(bundle))
    shutil.rmtree(bundle)
    return f"oci:{layout}:v1"


@pytest.fixture
def world(tmp_path: pathlib.Path) -> Iterator[tuple[str, dict[str, str], pathlib.Path]]:
    # ARCA_ROOT below a world-traversable directory, as /var/lib is (pytest's tmp is 0700)
    base = pathlib.Path(tempfile.mkdtemp(prefix="arca-perm-", dir="/tmp"))
    os.chmod(base, 0o755)  # noqa: S103 - the attack needs a traversable parent
    image = hostile_image(tmp_path)
    try:
        with arca_env(base, "arp-") as env:
            # an installation made by an older version: everything 0755
            os.chmod(env["ARCA_RUN"], 0o755)  # noqa: S103
            for d in ("images/layers", "containers"):
                (base / "root" / d).mkdir(parents=True, mode=0o755)
            os.chmod(base / "root", 0o755)  # noqa: S103
            yield image, env, base / "root"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    """``argv`` run by a shell that is already uid 65534 without capabilities (setpriv keeps
    its own until it execs, so it must not look up the attacker's paths itself)."""
    return subprocess.run([*NOBODY, "/bin/busybox", "sh", "-c", 'exec "$@"', "sh", *argv],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("tee", ["none", "sim"])
def test_local_user_cannot_reach_setuid_files_or_devices_of_images(
        world: tuple[str, dict[str, str], pathlib.Path], tee: str) -> None:
    image, env, root = world
    res = arca(env, "run", "-d", "--name", "p", "--tee", tee, image, "sleep", "30")
    assert res.returncode == 0, res.stderr
    cid = res.stdout.strip()
    # the image is intact: its setuid file and device node are there inside the container
    inside = arca(env, "run", "--rm", "--tee", "none", image, "sh", "-c",
                  "test -u /bin/suid && test -c /zero2 && echo ok")
    assert inside.stdout.strip() == "ok", inside.stderr
    # A TD's root is mounted in its uid range's slot (ADR 0048), a plain container's in place.
    top = f"{root}/containers/{cid}/bundle/rootfs"
    if tee != "none":
        from arca.host.runtime import userns

        slot = pathlib.Path(f"{root}/containers/{cid}/userns-slot").read_text()
        top = f"{userns.REGISTRY}/{slot}/{userns.ROOTFS}"
    suids = [*glob.glob(f"{root}/images/layers/*/bin/suid"), f"{top}/bin/suid"]
    nodes = [*glob.glob(f"{root}/images/layers/*/zero2"), f"{top}/zero2"]
    assert len(suids) == 2 and len(nodes) == 2
    for p in suids:
        assert os.stat(p).st_mode & stat.S_ISUID  # there, setuid root, seen by root
        got = as_nobody(p, "id", "-u")
        assert got.returncode != 0 and "ermission denied" in got.stderr, (p, got)
    for p in nodes:
        assert stat.S_ISCHR(os.stat(p).st_mode)
        got = as_nobody("/bin/busybox", "head", "-c", "4", p)
        assert got.returncode != 0 and "ermission denied" in got.stderr, (p, got)
    # every state directory is root-only, the ones an older version left open included
    for d in (root, root / "images", root / "images" / "layers", root / "containers",
              pathlib.Path(env["ARCA_RUN"])):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
    assert arca(env, "rm", "-f", "p").returncode == 0
