"""Faults of the ``vm`` backend through ``arca-runtime`` (containerd's calls): 20 create/start/
delete cycles, ``kill -9`` of the runtime in the middle of ``create`` then ``delete --force``,
and QEMU killed from outside leave no QEMU/VMM process, TD directory, registration, state,
cgroup or mount; the shared rootfs image cache stays. The VMs are killed long before they
finish booting: this is about the host side's bookkeeping."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import time
import uuid

import pytest

from arca.host.backends.vm import assets
from tests.integration.test_runtime_lifecycle import (
    NEEDS_ROOT_AND_RUNC,
    Runtime,
    assert_clean,
    isolated_env,
    runtime_session,
)
from tests.support.containerd import mounts_mentioning


def _vm_unavailable() -> str | None:
    try:
        assets.check_host()
    except assets.VmUnavailable as e:
        return str(e)
    return None


pytestmark = [pytest.mark.integration, NEEDS_ROOT_AND_RUNC,
              pytest.mark.skipif(_vm_unavailable() is not None,
                                 reason=f"vm backend unavailable: {_vm_unavailable()}")]

RUN = uuid.uuid4().hex[:6]
CYCLES = 20


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("vmf")
    with runtime_session(tmp, isolated_env(tmp)) as runtime:
        yield runtime


def qemu_pids(cid: str) -> list[int]:
    """QEMU processes in the container's cgroup."""
    out = []
    for p in pathlib.Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if b"qemu-system" in (p / "cmdline").read_bytes() and \
                        cid in (p / "cgroup").read_text():
                    out.append(int(p.name))
            except OSError:
                continue
    return out


def test_create_start_delete_cycles_leave_nothing(rt: Runtime) -> None:
    b = rt.bundle("vmcyc", ["sleep", "30"], tee="vm")
    config = (b / "config.json").read_bytes()
    images = pathlib.Path(os.environ["ARCA_ROOT"]) / "vm" / "rootfs"
    mounts = len(mounts_mentioning(str(rt.tmp)))
    for i in range(CYCLES):
        cid = f"vmcyc-{i}-{RUN}"
        (b / "config.json").write_bytes(config)  # create rewrites it in place
        rt.run("create", "--bundle", str(b), cid)
        deadline = time.monotonic() + 20  # the VMM starts QEMU right after runc started it
        while not qemu_pids(cid):
            assert time.monotonic() < deadline, "the container's process did not start QEMU"
            time.sleep(0.05)
        rt.run("start", cid)
        rt.run("delete", "--force", cid)
        assert_clean(rt, cid)
        assert qemu_pids(cid) == []
    assert len(list(images.glob("*.img"))) == 1  # built once, kept for the next container
    assert len(mounts_mentioning(str(rt.tmp))) == mounts
    assert list((pathlib.Path(os.environ["ARCA_RUN"]) / "td").iterdir()) == []


@pytest.mark.parametrize("delay", [0.05, 0.3, 1.0])
def test_kill_9_during_create_then_delete_force_leaves_nothing(rt: Runtime, delay: float
                                                               ) -> None:
    cid = f"vmk9-{int(delay * 1000)}-{RUN}"
    b = rt.bundle(cid, ["sleep", "30"], tee="vm")
    proc = subprocess.Popen(rt.argv("create", "--bundle", str(b), cid),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rt.run("delete", "--force", cid)
    assert_clean(rt, cid)
    assert qemu_pids(cid) == []


def test_qemu_killed_from_outside_stops_the_container_and_leaves_nothing(rt: Runtime
                                                                         ) -> None:
    cid = f"vmkq-{RUN}"
    b = rt.bundle(cid, ["sleep", "30"], tee="vm")
    rt.run("create", "--bundle", str(b), cid)
    rt.run("start", cid)
    deadline = time.monotonic() + 20
    while len(pids := qemu_pids(cid)) != 1:
        assert time.monotonic() < deadline, f"QEMU processes: {pids}"
        time.sleep(0.05)
    os.kill(pids[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while '"status": "stopped"' not in rt.run("state", cid, check=False).stdout:
        assert time.monotonic() < deadline, "the container outlived its VM"
        time.sleep(0.1)
    rt.run("delete", cid)
    assert_clean(rt, cid)
