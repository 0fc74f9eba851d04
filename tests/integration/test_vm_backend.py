"""The ``vm`` backend end to end with real QEMU (TCG), the real guest kernel, erofs + dm-verity:
``arca run --tee vm`` and ``ctr run --annotation io.arca.tee=vm`` show the workload's stdout,
stderr and exit code; the evidence's measurement equals ``arca measure --tee vm``; the rootfs
image is built once and shared; a flipped byte in it gives the guest an I/O error; nothing is
left behind. Secrets through a real KBS with a generated policy: ``test_demo_vm_act`` (the
``vm`` act of ``make demo``). Images and the rootfs cache are shared by the module (each VM boot
costs seconds under TCG)."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from arca.host.backends.vm import assets
from arca.host.measure import measure
from arca.verifier.base import Expected
from arca.verifier.sim import SimVerifier
from tests.support.containerd import (
    containerd_available,
    mounts_mentioning,
    processes_mentioning,
    run_containerd,
)
from tests.support.images import build_busybox_image, push
from tests.support.registry import registry_available, run_registry


def _vm_unavailable() -> str | None:
    if os.geteuid() != 0 or not (shutil.which("runc") and shutil.which("umoci")):
        return "needs root, runc and umoci"
    try:
        assets.check_host()
    except assets.VmUnavailable as e:
        return str(e)
    return None


pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(_vm_unavailable() is not None,
                                 reason=f"vm backend unavailable: {_vm_unavailable()}")]

BIN = pathlib.Path(sys.executable).parent
PROBE = b"arca-vm-probe " * 3000  # 42 kB: whole data blocks of its own, to corrupt
SCRIPT = "cat /run/arca/evidence.json; echo to-stderr >&2; exit 3"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("vm")
    short_run = tempfile.mkdtemp(prefix="avm-", dir="/tmp")
    env = {"ARCA_ROOT": str(tmp / "root"), "ARCA_RUN": short_run}
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    layout = tmp / "layout"
    build_busybox_image(layout, "v1", cmd=["sh", "-c", SCRIPT], files={"/probe": PROBE})
    from arca.host.simtee import client

    try:
        yield tmp, layout, {**os.environ, **env}
    finally:
        for c in json.loads(arca(env, "ps", "-a", "--json").stdout or "[]"):
            arca(env, "rm", "-f", c["id"])
        client.stop()
        mp.undo()
        shutil.rmtree(short_run, ignore_errors=True)


def arca(env: dict[str, str], *args: str, timeout: float = 300
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "arca"), *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def vm_claims(stdout: str) -> dict[str, object]:
    from arca.host.simtee import locations

    doc = json.loads(stdout[stdout.index("{"):stdout.rindex("}") + 1])
    assert doc["tee"] == "vm"
    verifier = SimVerifier([locations.root_cert_path().read_bytes()], tee="vm")
    claims = verifier.verify(base64.b64decode(doc["evidence"]), expected=Expected())
    assert claims.tee == "vm"
    return claims.values


def vmm_processes(env: dict[str, str]) -> list[str]:
    """QEMU and VMM processes of this test's containers (their mounts name our ARCA_RUN;
    other engineers' or CI jobs' VMs on the same host are not ours)."""
    out = []
    for line in processes_mentioning("/arca-vmm/vmm.py") + processes_mentioning("qemu-system"):
        pid = line.split(":")[0]
        try:
            if env["ARCA_RUN"] in pathlib.Path(f"/proc/{pid}/mountinfo").read_text():
                out.append(line)
        except OSError:
            continue
    return out


def leftovers(env: dict[str, str], timeout: float = 15) -> list[str]:
    """QEMU processes, TD directories, registrations, mounts of this test's state, after
    giving an exiting VM ``timeout`` seconds to be gone."""
    run = pathlib.Path(env["ARCA_RUN"])
    deadline = time.monotonic() + timeout
    while True:
        out = vmm_processes(env)
        for d in ("td", "containers", "simtee/tds"):
            out += [str(p) for p in (run / d).glob("*")] if (run / d).is_dir() else []
        out += mounts_mentioning(env["ARCA_ROOT"]) + mounts_mentioning(env["ARCA_RUN"])
        if not out or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


def test_arca_run_output_exit_code_and_measurement(world) -> None:  # type: ignore[no-untyped-def]
    _, layout, env = world
    image = f"oci:{layout}:v1"
    expected = measure(image, "vm").measurement  # from the image alone, before anything runs
    res = arca(env, "run", "--rm", "--tee", "vm", image)
    assert res.returncode == 3, res.stderr
    assert res.stderr.strip().endswith("to-stderr"), res.stderr
    assert vm_claims(res.stdout)["measurement"] == expected
    # the 2nd container of the image builds nothing: one rootfs image, one initramfs
    cache = pathlib.Path(env["ARCA_ROOT"]) / "vm"
    assert len(list((cache / "rootfs").glob("*.img"))) == 1
    assert len(list((cache / "initramfs").glob("*.cpio"))) == 1
    assert leftovers(env) == []


def test_a_command_the_guest_cannot_run_is_127_and_one_line(world) -> None:  # type: ignore[no-untyped-def]
    """vminit forks the agent (no second interpreter): the agent's own exit status still
    reaches the host (127: not found, as a shell, runc and podman say it), with its line."""
    _, layout, env = world
    res = arca(env, "run", "--rm", "--tee", "vm", f"oci:{layout}:v1", "/no/such-command")
    assert res.returncode == 127, res.stderr
    assert "cannot execute '/no/such-command'" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert leftovers(env) == []


def test_the_guest_kernel_has_entropy_before_init_and_no_tee_modules(world) -> None:  # type: ignore[no-untyped-def]
    """The CPU model has RDRAND (QEMU's, from the host's getrandom): the guest kernel's pool
    is ready before ``/init`` runs, so the init's interpreter (its hash seed) never waits ~1 s
    for jitter entropy under TCG (ADR 0063). A ``vm`` guest loads none of the configfs-tsm
    stack that ``tdx``/``snp`` guests load (test_tdx_guest_tcg.py: they do)."""
    _, layout, env = world
    res = arca(env, "run", "--rm", "--tee", "vm", f"oci:{layout}:v1", "sh", "-c",
               "grep -c -w rdrand /proc/cpuinfo; cat /proc/modules; dmesg")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()

    def stamp(what: str) -> float:
        line = next(ln for ln in lines if what in ln)
        return float(line.split("]")[0].strip("[ "))

    assert stamp("random: crng init done") < stamp("as init process"), res.stdout
    assert int(lines[0]) >= 1, res.stdout
    loaded = {ln.split()[0] for ln in lines if " Live " in ln}
    assert {"dm_verity", "erofs", "overlay", "virtio_net"} <= loaded, loaded
    assert not loaded & {"configfs", "tsm", "tdx_guest", "sev_guest"}, loaded
    assert leftovers(env) == []


def test_two_vms_of_one_image_share_one_rootfs_image(world) -> None:  # type: ignore[no-untyped-def]
    _, layout, env = world
    ids = []
    for name in ("share-a", "share-b"):
        res = arca(env, "run", "-d", "--name", name, "--tee", "vm", f"oci:{layout}:v1",
                   "sleep", "600")
        assert res.returncode == 0, res.stderr
        ids.append(res.stdout.strip())
    try:
        inodes = set()
        for cid in ids:
            launch = json.loads(next((pathlib.Path(env["ARCA_RUN"]) / "td").glob(
                f"{cid}*/launch.json")).read_text())
            config = json.loads(next(pathlib.Path(env["ARCA_ROOT"]).rglob(
                f"containers/{cid}*/bundle/config.json")).read_text())
            src = next(m["source"] for m in config["mounts"]
                       if m["destination"] == "/arca-vm/rootfs.img")
            assert "ro" in next(m["options"] for m in config["mounts"]
                                if m["destination"] == "/arca-vm/rootfs.img")
            assert "-drive" in launch["argv"]
            inodes.add(os.stat(src).st_ino)
        assert len(inodes) == 1
    finally:
        for name in ("share-a", "share-b"):
            arca(env, "rm", "-f", name)
    assert leftovers(env) == []


def test_flipped_byte_in_cached_rootfs_is_an_io_error_in_the_guest(world) -> None:  # type: ignore[no-untyped-def]
    _, layout, env = world
    measure(f"oci:{layout}:v1", "vm")  # builds the cached image if no test did yet
    images = list((pathlib.Path(env["ARCA_ROOT"]) / "vm" / "rootfs").glob("*.img"))
    assert len(images) == 1
    img = images[0]
    data = img.read_bytes()
    at = data.index(PROBE[:64]) + 5 * 4096 + 100  # a data block of /probe, not metadata
    os.chmod(img, 0o644)
    try:
        with open(img, "r+b") as f:
            f.seek(at)
            f.write(bytes([data[at] ^ 0x01]))
        res = arca(env, "run", "--rm", "--tee", "vm", f"oci:{layout}:v1", "cat", "/probe")
        assert res.returncode != 0
        # dm-verity fails the read of that block: EIO for the workload
        assert "Input/output error" in res.stderr, res.stderr
        # the blocks before the flipped one verify and are read; nothing from it on is
        assert len(res.stdout) <= at - data.index(PROBE[:64])
        assert PROBE.startswith(res.stdout.encode())
        # a block the mount itself reads (the erofs superblock): refused before any workload
        with open(img, "r+b") as f:
            f.seek(at)
            f.write(bytes([data[at]]))
            f.seek(1024 + 8)
            f.write(bytes([data[1024 + 8] ^ 0x01]))
        res = arca(env, "run", "--rm", "--tee", "vm", f"oci:{layout}:v1", "cat", "/probe")
        assert res.returncode == 125
        assert "does not match its measured dm-verity root hash" in res.stderr, res.stderr
    finally:
        with open(img, "r+b") as f:
            for off in (at, 1024 + 8):
                f.seek(off)
                f.write(bytes([data[off]]))
        os.chmod(img, 0o444)
    assert leftovers(env) == []


def test_stop_delivers_sigterm_to_the_workload_in_the_guest(world) -> None:  # type: ignore[no-untyped-def]
    """``arca stop``: the VMM forwards SIGTERM over the control port, the guest's init sends it
    to the workload, whose own exit status comes back."""
    _, layout, env = world
    script = 'trap "echo got-term; exit 42" TERM; echo ready; while true; do sleep 1; done'
    res = arca(env, "run", "-d", "--name", "sig", "--tee", "vm", f"oci:{layout}:v1",
               "sh", "-c", script)
    assert res.returncode == 0, res.stderr
    try:
        deadline = time.monotonic() + 240
        while "ready" not in arca(env, "logs", "sig").stdout:
            assert time.monotonic() < deadline, "the workload never started"
            time.sleep(1)
        assert arca(env, "stop", "sig").returncode == 0
        assert "got-term" in arca(env, "logs", "sig").stdout
        assert "Exited (42)" in arca(env, "ps", "-a").stdout
    finally:
        arca(env, "rm", "-f", "sig")
    assert leftovers(env) == []


def test_missing_kernel_is_one_line_and_leaves_nothing(world, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    _, layout, env = world
    # A runtime config file sends create down arca-runtime's Python path (ADR 0003), which
    # sees this environment; the sim daemon's fast path would use its own ARCA_VM_DATA.
    config = tmp_path / "runtime.json"
    config.write_text("{}")
    res = arca({**env, "ARCA_VM_DATA": str(tmp_path / "none"),
                "ARCA_RUNTIME_CONFIG": str(config)}, "run", "--rm", "--tee", "vm",
               f"oci:{layout}:v1")
    assert res.returncode != 0
    assert "no guest kernel installed" in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 2, res.stderr
    assert leftovers(env) == []


@pytest.mark.skipif(not (containerd_available() and registry_available()),
                    reason="needs containerd, ctr and docker-registry")
def test_containerd_output_exit_code_and_measurement(world) -> None:  # type: ignore[no-untyped-def]
    tmp, layout, env = world
    with run_registry(tmp / "registry") as reg, run_containerd(tmp / "ctrd", env=env) as ctrd:
        ref = push(f"{layout}:v1", reg.host, "vm:v1")
        ctrd.pull_plain_http(ref)
        res = ctrd.ctr("run", "--rm", *ctrd.run_args(str(BIN / "arca-runtime")),
                       "--annotation", "io.arca.tee=vm", ref, "vm-ctr", check=False,
                       timeout=300)
        assert res.returncode == 3, res.stderr
        assert "to-stderr" in res.stderr
        assert vm_claims(res.stdout)["measurement"] == measure(f"oci:{layout}:v1",
                                                               "vm").measurement
    assert leftovers(env) == []


def test_demo_vm_act() -> None:
    """``arca demo --tee vm``: a real ``arca kbs serve``, ``arca policy generate --tee vm``, the
    secret delivered to the VM after attestation, a one-byte-different image refused."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="avmd-", dir="/tmp"))
    env = {**os.environ, "ARCA_ROOT": str(tmp / "root"), "ARCA_RUN": str(tmp / "run")}
    try:
        res = subprocess.run([sys.executable, "-m", "arca.cli.main", "demo", "--tee", "vm"],
                             env=env, capture_output=True, text=True, timeout=900,
                             stdin=subprocess.DEVNULL)
        out = res.stdout + res.stderr
        assert res.returncode == 0, out
        assert "my secret is: the launch code is 0000" in out
        assert "secret delivered after attestation" in out
        assert "tampered image refused" in out
        assert "403 PolicyDeny" in out
    finally:
        subprocess.run([sys.executable, "-m", "arca.cli.main", "simtee", "stop"], env=env,
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
