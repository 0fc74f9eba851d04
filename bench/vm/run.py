"""The ``vm`` backend's costs, each against a baseline measured in the same run (ratios printed).

1. Start to first workload output, interleaved: ``arca run --tee vm`` vs the **floor** (bare
   QEMU, same kernel + initramfs + devices, ``rdinit=/bin/busybox`` printing its banner as the
   first line), with ``--tee sim`` and ``--tee none`` (runc) for context; the guest console's
   timestamps give the breakdown (kernel to /init, guest init to agent, agent to workload).
2. 1st vs 10th container of a ~100 MB image: the backend's ``reference()`` (rootfs image
   build + initramfs + digests) cold vs warm.
3. Host memory of one idle ``vm`` container: RSS and PSS of QEMU + the VMM process, and the
   part beyond the configured guest RAM.
4. Reading 100 MB from the verity rootfs in the guest vs from the same file on the host.

Usage: ``run.py [--runs N] [--tee vm|tdx|snp]`` (default 3 runs of ``vm``; each VM boot costs
seconds under TCG). ``--tee tdx|snp`` runs the same on a host with the hardware (the floor is
then a bare QEMU boot with the same confidential objects and firmware); elsewhere it stops at
once with the backend's reason (``arca doctor``). Needs root and ``make setup``. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from tests.support.images import build_busybox_image  # noqa: E402

BIN = pathlib.Path(sys.executable).parent


def first_line(argv: list[str], env: dict[str, str], pattern: bytes) -> tuple[float, float]:
    """(seconds to the first stdout line matching ``pattern``, seconds to exit)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    first = float("nan")
    for line in proc.stdout:
        if pattern in line and first != first:
            first = time.monotonic() - t0
    proc.wait()
    return first, time.monotonic() - t0


def floor_argv(ref: dict[str, str]) -> list[str]:
    from arca.host.backends.vm import assets, launch

    if "argv" in ref:  # a tdx/snp launch, already at host paths (floor_argv_cvm)
        argv = json.loads(ref["argv"])
    else:
        vm = launch.Launch(ref["kernel_path"], ref["initrd_path"], ref["rootfs_path"],
                           ref["cmdline"].replace("quiet", "quiet rdinit=/bin/busybox"))
        argv = launch.qemu_argv(assets.qemu_binary(), vm)
        # Same machine and devices, outside a container: files at their host paths, console
        # on stdout, no control socket (the guest never reaches Arca's init).
        swap = {launch.IN_CONTAINER_KERNEL: vm.kernel, launch.IN_CONTAINER_INITRD: vm.initrd}
        argv = [swap.get(a, a) for a in argv]
    out = []
    skip = 0
    for i, a in enumerate(argv):
        if skip:
            skip -= 1
            continue
        if a == "-serial":
            out += ["-serial", "stdio"]
            skip = 1
        elif a in ("-chardev", "-device", "-drive", "-object", "-netdev") and any(
                k in argv[i + 1] for k in ("ctl", "out", "err", "root", "rng", "net", "serial")):
            skip = 1
        else:
            out.append(a)
    return out


def floor_argv_cvm(backend: object, ref: dict[str, str]) -> list[str]:
    """The floor of a tdx/snp VM: its own QEMU arguments (confidential objects, firmware) at
    host paths, console on stdout, without Arca's control, stdio and rootfs devices."""
    from arca.host.backends import _confidential as cvm
    from arca.host.backends.vm import launch

    assert isinstance(backend, cvm.ConfidentialVmBackend)
    s = backend.settings
    argv = backend.launch_argv(ref["cmdline"].replace("quiet", "quiet rdinit=/bin/busybox"),
                               None)
    swap = {launch.IN_CONTAINER_KERNEL_BZ: s.kernel, launch.IN_CONTAINER_INITRD:
            ref["initrd_path"], cvm.IN_CONTAINER_FIRMWARE: s.firmware}
    return floor_argv({"argv": json.dumps([swap.get(a, a) for a in argv])})


def smaps_rollup(pid: int) -> tuple[int, int]:
    text = pathlib.Path(f"/proc/{pid}/smaps_rollup").read_text()
    rss = int(re.search(r"^Rss:\s+(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    pss = int(re.search(r"^Pss:\s+(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    return rss, pss


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "3")))
    ap.add_argument("--tee", choices=("vm", "tdx", "snp"), default="vm",
                    help="the VM backend to measure (tdx/snp need the hardware)")
    args = ap.parse_args()
    from arca.host.backends import get as backend_of
    from arca.wire.errors import ConfigError

    try:
        backend_of(args.tee).check_host()
    except ConfigError as e:
        print(f"bench/vm: {e}", file=sys.stderr)
        return 2
    tee = args.tee
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bvm-", dir="/tmp"))
    env = {**os.environ, "ARCA_ROOT": str(tmp / "root"), "ARCA_RUN": str(tmp / "run")}
    os.environ.update({k: env[k] for k in ("ARCA_ROOT", "ARCA_RUN")})
    arca = [str(BIN / "arca")]
    try:
        layout = tmp / "layout"
        big = os.urandom(1 << 20) * 100  # 100 MiB, one file
        build_busybox_image(layout, "v1", files={"/big": big}, cmd=["echo", "first-output"])

        # 2. 1st vs 10th container: the reference (everything create computes) cold and warm.
        from arca.host.backends import get
        from arca.host.backends.base import LaunchInputs
        from arca.host.guestruntime import ensure_guest_runtime
        from arca.host.images import ImageStore, resolve
        from arca.host.measure import mounted_rootfs
        from arca.host.runtime.bundle import process_spec

        subprocess.run([*arca, "image", "load", str(layout), "--tag", "v1", "--name",
                        "bench-vm:v1"], env=env, check=True, capture_output=True)
        store = ImageStore()
        record = resolve(store, "bench-vm:v1")
        backend = get(tee)
        gr = ensure_guest_runtime()
        spec = process_spec({"args": ["echo", "x"], "env": [], "cwd": "/"})
        with mounted_rootfs(store, record) as rootfs:
            times = []
            for _ in range(10):
                t0 = time.monotonic()
                ref = backend.reference(LaunchInputs(rootfs, spec, None, gr))
                times.append(time.monotonic() - t0)
        print(f"reference (create's Arca part) 1st: {times[0]:.2f} s, 10th: {times[-1]*1e3:.1f}"
              f" ms -> {times[0] / times[-1]:.0f}x (goal >= 10x)")

        # 1. start to first output, interleaved with the floor, sim and runc.
        floor = floor_argv(dict(ref.extra)) if tee == "vm" else floor_argv_cvm(backend,
                                                                                dict(ref.extra))
        res: dict[str, list[float]] = {"floor": [], "vm": [], "sim": [], "none": []}
        for _ in range(args.runs):
            res["floor"].append(first_line(floor, env, b"BusyBox v")[0])
            for kind, name in ((tee, "vm"), ("sim", "sim"), ("none", "none")):
                t, _ = first_line([*arca, "run", "--rm", "--tee", kind, "bench-vm:v1"], env,
                                  b"first-output")
                res[name].append(t)
        med = {k: statistics.median(v) for k, v in res.items() if v}
        for k, v in med.items():
            print(f"start -> first output  {k:5s}: median {v:7.2f} s  ({res[k]})")
        print(f"vm / floor: {med['vm'] / med['floor']:.2f}x (goal <= 1.25x); "
              f"vm / sim: {med['vm'] / med['sim']:.1f}x; vm / runc: {med['vm'] / med['none']:.0f}x")

        # 3. idle VMM memory.
        out = subprocess.run([*arca, "run", "-d", "--name", "idle", "--tee", tee,
                              "bench-vm:v1", "sleep", "3600"], env=env, capture_output=True,
                             text=True, check=True)
        cid = out.stdout.strip()
        time.sleep(60)  # booted and idle (under TCG on a loaded host)
        for log in (tmp / "run").glob(f"td/{cid}*/console.log"):
            print("guest console (kernel uptime of each guest init step):")
            print("  " + "\n  ".join(ln for ln in log.read_text().splitlines()
                                   if "arca-vminit" in ln or "Run /init" in ln))
        vmm = [int(p) for p in os.listdir("/proc") if p.isdigit() and
               b"/arca-vmm/vmm.py" in pathlib.Path(f"/proc/{p}/cmdline").read_bytes()
               and cid in pathlib.Path(f"/proc/{p}/cgroup").read_text()]
        qemu = [int(p) for p in os.listdir("/proc") if p.isdigit() and
                b"qemu-system" in pathlib.Path(f"/proc/{p}/cmdline").read_bytes() and
                int(pathlib.Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()[1])
                in vmm]
        for name, pids in (("qemu", qemu), ("vmm.py", vmm)):
            for pid in pids[:1]:
                rss, pss = smaps_rollup(pid)
                print(f"idle {name}: RSS {rss / 1024:.0f} MiB, PSS {pss / 1024:.0f} MiB"
                      + (f" (beyond 256 MiB guest RAM: {max(0, rss / 1024 - 256):.0f} MiB; "
                         "guest pages are touched lazily)" if name == "qemu" else ""))
        subprocess.run([*arca, "rm", "-f", "idle"], env=env, capture_output=True)

        # 4. 100 MB from the verity rootfs vs the host.
        host_file = tmp / "big"
        host_file.write_bytes(big)
        os.sync()
        t0 = time.monotonic()
        subprocess.run(["dd", f"if={host_file}", "of=/dev/null", "bs=1M"], capture_output=True,
                       check=True)
        host_s = time.monotonic() - t0
        out = subprocess.run([*arca, "run", "--rm", "--tee", tee, "bench-vm:v1", "sh", "-c",
                              "time cat /big > /dev/null"], env=env, capture_output=True)
        # busybox time: "real\t0m 1.23s" on stderr (its date has no %N)
        m = re.search(rb"real\s+(\d+)m\s*([\d.]+)s", out.stderr)
        guest_ms = (int(m.group(1)) * 60 + float(m.group(2))) * 1e3 if m else float("nan")
        if m is None:
            print(f"guest read failed: {out.stderr[-300:]!r}")
        print(f"read 100 MiB: host {host_s * 1e3:.0f} ms (page cache), verity rootfs in the "
              f"guest {guest_ms:.0f} ms -> {guest_ms / (host_s * 1e3):.0f}x")
        print(json.dumps({"floor_s": med["floor"], "vm_s": med["vm"], "sim_s": med["sim"],
                          "none_s": med["none"]}))
    finally:
        subprocess.run([*arca, "rm", "-f", "idle"], env=env, capture_output=True)
        subprocess.run([*arca, "image", "rm", "bench-vm:v1"], env=env, capture_output=True)
        subprocess.run([sys.executable, "-c", "from arca.host.simtee import client; "
                        "client.stop()"], env=env, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
