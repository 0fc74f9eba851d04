"""The ``vm`` backend's cost (issue 11, "Performance"). Not a timed test: prints what one run
measured, with ratios taken within that run (variants interleaved round by round, so load drift
hits them alike).

1. Start to first workload output through containerd (``ctr run --rm``, ``echo first``):
   ``--tee`` (``vm`` by default) versus the **floor**, a bare QEMU boot of the same kernel and
   initramfs with the same machine and command line to its first line (``rdinit`` runs
   busybox ``echo``: no Arca code, no rootfs, no devices but the console; goal ≤ 1.25×); ``sim``
   and plain runc for context. The breakdown of one ``vm`` start, from the host: create
   (runtime, rootfs cache lookup, runc) until QEMU runs, then the guest console's milestones
   as the host sees them appear (kernel and modules, rootfs verified, network, agent started,
   released), then the agent (evidence; attestation and secrets when init-data names a KBS;
   here none) until the first output; plus the rootfs cache's cold build of the image.
2. 1st versus 10th container of a ~100 MB image (random content, so erofs cannot shrink it):
   ``ctr run -d`` until it returns (create + start), from an empty Arca cache, then nine more;
   goal ≥ 10× (the rootfs image is built once).
3. Host memory of one idle ``vm`` container's VMM: RSS and PSS of QEMU (and of the VMM's
   Python) beyond the configured guest RAM (goal ≤ 64 MiB), and that guest RAM (default).
4. Reading 100 MB in the guest from the verity rootfs versus reading the same file on the
   host (page cache dropped for the file first: ``posix_fadvise(DONTNEED)``): the ratio.

``--tee tdx|snp`` runs the same on a host with that hardware; elsewhere it stops with the
backend's own reason (``check_host``). Needs root, containerd, docker-registry, umoci, QEMU and
the guest kernel (``make setup``). Usage: ``run.py [--tee vm] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from tests.support.containerd import run_containerd  # noqa: E402
from tests.support.images import build_busybox_image, push  # noqa: E402
from tests.support.registry import run_registry  # noqa: E402
from tests.support.vm import qemu_of  # noqa: E402

RUNTIME = str(pathlib.Path(sys.executable).parent / "arca-runtime")
MIB = 1 << 20
BIG_FILES, BIG_FILE_SIZE = 25, 4 * MIB  # ~100 MB image
TIMEOUT = 600


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def first_line(argv: list[str], want: str, env: dict[str, str] | None = None,
               on_start=None, cpu_of=None) -> float:  # type: ignore[no-untyped-def]
    """Seconds from starting ``argv`` until a line containing ``want`` is on its stdout. With
    ``cpu_of`` (a function of the started process returning the QEMU pid), the QEMU's CPU
    seconds at that moment are appended to the list ``first_line.cpu``."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    took = None
    try:
        if on_start is not None:
            on_start(proc, t0)
        buf = b""
        while took is None:
            if not select.select([proc.stdout], [], [], TIMEOUT)[0]:
                raise RuntimeError(f"no output from {argv[:3]}")
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"{argv[:3]} ended without {want!r}: {err.strip()[-300:]}")
            buf += chunk
            if want.encode() in buf:
                took = time.monotonic() - t0
                if cpu_of is not None:
                    first_line.cpu.append(cpu_seconds(cpu_of(proc)))  # type: ignore[attr-defined]
        proc.wait(TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return took


first_line.cpu = []  # type: ignore[attr-defined]


#: ``rdinit`` of the floor: busybox prints the line. Of the Python floor: the guest runtime's
#: interpreter (as the initramfs's ``/init`` starts it) prints it: what any guest init written
#: in Python pays before its first own line, whatever that init then does.
FLOOR_INIT = "/bin/busybox -- echo first"
PYTHON_FLOOR_INIT = ("/.arca/lib/ld-linux-x86-64.so.2 -- --library-path /.arca/lib "
                     "/.arca/bin/python3 -I -S -B -c print('first')")
FLOOR, PYTHON_FLOOR = "floor (bare QEMU boot)", "floor + guest Python start"


def floor_argv(ref: dict, init: str = FLOOR_INIT) -> list[str]:
    """The bare boot: the launch's machine, kernel, initramfs and command line (plus
    ``rdinit``: ``init`` prints one line, then the kernel panics and ``-no-reboot`` ends
    QEMU)."""
    from arca.host.backends.vm import assets, launch

    extra = ref["launch"]
    cmdline = f"{extra['cmdline']} rdinit={init}"
    return [assets.qemu_binary(), "-M", "microvm,acpi=on,auto-kernel-cmdline=off", "-accel",
            launch.ACCEL, "-cpu", launch.CPU_MODEL, "-smp", extra["vcpus"], "-m",
            extra["memory_mib"], "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-kernel", extra["kernel_path"], "-initrd", extra["initrd_path"],
            "-append", cmdline, "-serial", "stdio"]


class Bench:
    def __init__(self, tmp: pathlib.Path, ctrd, images: dict[str, str], layout: pathlib.Path,
                 tee: str) -> None:
        self.tmp, self.ctrd, self.images, self.layout, self.tee = tmp, ctrd, images, layout, tee

    def ctr_run(self, image: str, tee: str | None, *cmd: str, detach: bool = False,
                cid: str | None = None) -> list[str]:
        cid = cid or f"b{uuid.uuid4().hex[:8]}"
        ann = ["--annotation", f"io.arca.tee={tee}"] if tee else []
        runtime = RUNTIME if tee else shutil.which("runc") or "runc"
        return self.ctrd.ctr_argv("run", "-d" if detach else "--rm", "--net-host",
                                  *self.ctrd.run_args(runtime), *ann, self.images[image],
                                  cid, *cmd)

    def remove(self, cid: str) -> None:
        self.ctrd.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False)
        for _ in range(300):
            res = self.ctrd.ctr("tasks", "delete", cid, check=False)
            if res.returncode == 0 or "not found" in res.stderr:
                break
            time.sleep(0.1)
        self.ctrd.ctr("containers", "delete", cid, check=False)


def measure_ref(layout: pathlib.Path, tag: str, tee: str) -> dict:
    res = subprocess.run([str(pathlib.Path(sys.executable).parent / "arca"), "measure",
                          f"oci:{layout}:{tag}", "--tee", tee, "--json"],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(res.stderr.strip())
    return json.loads(res.stdout)


def qemu_pid(cid: str):  # type: ignore[no-untyped-def]
    """The QEMU of container ``cid`` (for ``first_line``'s ``cpu_of``)."""
    return lambda _proc: qemu_of(cid)[0]


def startup(b: Bench, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall seconds to first output per variant, and QEMU's CPU seconds at that moment for
    the floor and the tee (the guest's own work: load on the host's cores stretches wall
    time, much less the CPU time a boot needs)."""
    ref = measure_ref(b.layout, "latest", b.tee)
    cpu: dict[str, list[float]] = {FLOOR: [], PYTHON_FLOOR: [], b.tee: []}

    def with_cpu(name: str, fn):  # type: ignore[no-untyped-def]
        def run() -> float:
            first_line.cpu = []  # type: ignore[attr-defined]
            took = fn()
            cpu[name].extend(first_line.cpu)  # type: ignore[attr-defined]
            return took
        return run

    def tee_run() -> float:
        cid = f"b{uuid.uuid4().hex[:8]}"
        return first_line(b.ctr_run("latest", b.tee, "echo", "first", cid=cid), "first",
                          cpu_of=qemu_pid(cid))

    def bare(init: str) -> float:
        return first_line(floor_argv(ref, init), "first", cpu_of=lambda proc: proc.pid)

    variants = {
        FLOOR: with_cpu(FLOOR, lambda: bare(FLOOR_INIT)),
        PYTHON_FLOOR: with_cpu(PYTHON_FLOOR, lambda: bare(PYTHON_FLOOR_INIT)),
        b.tee: with_cpu(b.tee, tee_run),
        "sim": lambda: first_line(b.ctr_run("latest", "sim", "echo", "first"), "first"),
        "runc": lambda: first_line(b.ctr_run("latest", None, "echo", "first"), "first"),
    }
    for fn in variants.values():  # warm-up: caches built, daemons started
        fn()
    for xs in cpu.values():
        xs.clear()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            times[name].append(fn())
    return times, cpu


def breakdown(b: Bench) -> list[tuple[str, float, float | None, str]]:
    """One ``vm`` start watched from the host: QEMU's appearance and the guest console's
    milestones (the TD directory's ``console.log``, polled every 5 ms), each as (what, seconds
    since ``ctr run``, QEMU's CPU seconds then, the guest's uptime stamp)."""
    from arca.host import paths

    cid = f"bd{uuid.uuid4().hex[:6]}"
    marks: list[tuple[str, float, float | None, str]] = []
    pid: list[int] = []

    def cpu() -> float | None:
        with contextlib.suppress(OSError, IndexError):
            return cpu_seconds(pid[0])
        return None

    def watch(proc, t0: float) -> None:  # type: ignore[no-untyped-def]
        console = paths.run_dir() / "td" / cid / "console.log"
        seen: set[str] = set()
        while proc.poll() is None and time.monotonic() - t0 < TIMEOUT:
            if not pid and (found := qemu_of(cid)):
                pid.append(found[0])
                marks.append(("create: runtime, rootfs cache lookup, runc -> QEMU running",
                              time.monotonic() - t0, cpu(), ""))
            with contextlib.suppress(OSError):
                # complete lines only: QEMU may be halfway through writing the last one
                for line in console.read_text(errors="replace").split("\n")[:-1]:
                    up, sep, what = line.partition("arca-vminit: ")
                    if sep and line not in seen:
                        seen.add(line)
                        marks.append((what, time.monotonic() - t0, cpu(),
                                      up.strip(" []")))
            if select.select([proc.stdout], [], [], 0.005)[0]:
                marks.append(("first workload output", time.monotonic() - t0, cpu(), ""))
                return

    first_line(b.ctr_run("latest", b.tee, "echo", "first", cid=cid), "first", on_start=watch)
    return marks


def rootfs_cold_build(b: Bench) -> float:
    """The rootfs cache's build of the busybox image from nothing (erofs + dm-verity)."""
    from arca.host.backends.vm.rootfs import ensure_rootfs_image

    unpacked = b.tmp / "unpacked-latest"
    if not unpacked.exists():
        subprocess.run(["umoci", "unpack", "--image", f"{b.layout}:latest", str(unpacked)],
                       check=True, capture_output=True)
    root = b.tmp / "cold-root"
    old = os.environ["ARCA_ROOT"]
    os.environ["ARCA_ROOT"] = str(root)
    try:
        t0 = time.monotonic()
        ensure_rootfs_image(unpacked / "rootfs")
        return time.monotonic() - t0
    finally:
        os.environ["ARCA_ROOT"] = old
        shutil.rmtree(root, ignore_errors=True)


def first_vs_tenth(b: Bench) -> list[float]:
    out = []
    for _ in range(10):
        cid = f"big{uuid.uuid4().hex[:6]}"
        t0 = time.monotonic()
        res = subprocess.run(b.ctr_run("big", b.tee, "sleep", "1000", detach=True, cid=cid),
                             capture_output=True, text=True, timeout=TIMEOUT)
        out.append(time.monotonic() - t0)
        b.remove(cid)
        if res.returncode != 0:
            raise RuntimeError(res.stderr.strip())
    return out


def smaps_rollup(pid: int) -> dict[str, int]:
    vals = {}
    for line in pathlib.Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        k, v = line.split(":", 1)
        vals[k] = int(v.split()[0]) * 1024
    return vals


def qemu_mappings(pid: int, guest_bytes: int) -> dict[str, float]:
    """QEMU's resident memory (MiB) by kind, from ``/proc/PID/smaps``: guest RAM (the anonymous
    mapping of the configured size), the kernel and initramfs files QEMU keeps mapped for a
    reset (file-backed: shared by every VM using them, reclaimable), QEMU's binary and
    libraries, and its own anonymous memory (TCG translation cache, heap, device state)."""
    out = dict.fromkeys(("guest_ram_touched", "kernel_initrd_files", "qemu_files", "qemu_anon"),
                        0.0)
    kind = "qemu_anon"
    for line in pathlib.Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and not head[0].endswith(":"):
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            name = head[5] if len(head) > 5 else ""
            if hi - lo == guest_bytes and not name:
                kind = "guest_ram_touched"
            elif name.startswith("/arca-vm/") or name.endswith((".cpio", "/vmlinux")):
                kind = "kernel_initrd_files"
            elif name.startswith("/"):
                kind = "qemu_files"
            else:
                kind = "qemu_anon"
        elif head[0] == "Rss:":
            out[kind] += int(head[1]) / 1024
    return out


def memory(b: Bench) -> dict[str, float]:
    cid = f"mem{uuid.uuid4().hex[:6]}"
    proc = subprocess.Popen(b.ctr_run("latest", b.tee, "sh", "-c", "echo ready; sleep 1000",
                                      cid=cid), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(5)  # idle
        qemu = qemu_of(cid)[0]
        q = smaps_rollup(qemu)
        ref = measure_ref(b.layout, "latest", b.tee)
        guest = int(ref["launch"]["memory_mib"]) * MIB
        vmm = int(pathlib.Path(f"/proc/{qemu}/stat").read_text().rpartition(")")[2].split()[1])
        v = smaps_rollup(vmm)
        parts = qemu_mappings(qemu, guest)
        return {**{f"{k}_mib": x for k, x in parts.items()},
                "guest_ram_mib": guest / MIB, "qemu_rss_mib": q["Rss"] / MIB,
                "qemu_pss_mib": q["Pss"] / MIB, "vmm_py_pss_mib": v["Pss"] / MIB,
                "beyond_guest_rss_mib": (q["Rss"] + v["Pss"] - guest) / MIB,
                "beyond_guest_pss_mib": (q["Pss"] + v["Pss"] - guest) / MIB}
    finally:
        b.remove(cid)
        proc.wait(60)


def read_100mb(b: Bench) -> tuple[float, float]:
    """(guest seconds, host seconds) to read the image's 100 MB data from its rootfs."""
    script = ("s=$(cat /proc/uptime); cat /data/* > /dev/null; e=$(cat /proc/uptime); "
              "echo \"$s $e\"")
    res = subprocess.run(b.ctr_run("big", b.tee, "sh", "-c", script), capture_output=True,
                         text=True, timeout=TIMEOUT)
    if res.returncode != 0:
        raise RuntimeError(res.stderr.strip())
    parts = res.stdout.split()
    guest = float(parts[2]) - float(parts[0])
    files = sorted((b.tmp / "big-data").iterdir())
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    t0 = time.monotonic()
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(MIB):
                pass
    return guest, time.monotonic() - t0


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tee", default=None, help="vm (default), tdx or snp")
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3")))
    opts = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/vm needs root", file=sys.stderr)
        return 1
    from arca.host.backends import get
    from arca.wire.errors import ArcaError

    explicit, opts.tee = opts.tee is not None, opts.tee or "vm"
    try:
        get(opts.tee).check_host()
    except ArcaError as e:
        # `make bench` on a host without QEMU: say why and go on; an explicit --tee fails
        print(f"bench/vm: --tee {opts.tee} cannot run here: {e}", file=sys.stderr)
        return 1 if explicit else 0
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-vm-"))
    run_dir = tempfile.mkdtemp(prefix="bvm-", dir="/tmp")
    env = {"ARCA_ROOT": str(tmp / "arca-root"), "ARCA_RUN": run_dir}
    os.environ.update(env)
    from arca.host.simtee import client

    try:
        layout = tmp / "layout"
        build_busybox_image(layout, "latest")
        data = tmp / "big-data"
        data.mkdir()
        for i in range(BIG_FILES):
            (data / f"f{i:02d}").write_bytes(os.urandom(BIG_FILE_SIZE))
        build_busybox_image(layout, "big", files={f"/data/f{i:02d}": (data / f"f{i:02d}")
                                                  .read_bytes() for i in range(BIG_FILES)})
        with run_registry(tmp / "registry") as reg, \
                run_containerd(tmp / "ctrd", env=env) as ctrd:
            images = {}
            for tag in ("latest", "big"):
                images[tag] = push(f"{layout}:{tag}", reg.host, f"benchvm:{tag}")
                ctrd.pull_plain_http(images[tag])
            b = Bench(tmp, ctrd, images, layout, opts.tee)
            print(f"== bench/vm --tee {opts.tee} (load average {os.getloadavg()[0]:.1f} on "
                  f"{os.cpu_count()} CPUs)", flush=True)
            # 2 first: the 1st container needs an empty cache
            big = first_vs_tenth(b)
            print(f"1st vs 10th container of a {BIG_FILES * BIG_FILE_SIZE // MIB} MiB image "
                  f"(ctr run -d): 1st {big[0]:.2f}s, 10th {big[-1]:.2f}s, median 2nd-10th "
                  f"{med(big[1:]):.2f}s: {big[0] / big[-1]:.1f}x (goal >= 10x)", flush=True)
            times, cpu = startup(b, opts.rounds)
            fl = med(times[FLOOR])
            print(f"start to first output, median of {opts.rounds} interleaved rounds:")
            for name, xs in times.items():
                print(f"  {name:28s} {med(xs):6.2f}s  ({', '.join(f'{x:.2f}' for x in xs)})  "
                      f"{med(xs) / fl:.2f}x floor")
            print(f"  {opts.tee} / floor = {med(times[opts.tee]) / fl:.2f}x wall (goal <= 1.25x); "
                  f"{opts.tee} / (floor + guest Python start) = "
                  f"{med(times[opts.tee]) / med(times[PYTHON_FLOOR]):.2f}x", flush=True)
            print("QEMU CPU seconds until the first output (the guest's work; less load noise):")
            cfl = med(cpu[FLOOR])
            for name, xs in cpu.items():
                print(f"  {name:28s} {med(xs):6.2f}s  ({', '.join(f'{x:.2f}' for x in xs)})  "
                      f"{med(xs) / cfl:.2f}x floor")
            print(f"  {opts.tee} / floor = {med(cpu[opts.tee]) / cfl:.2f}x CPU", flush=True)
            print("breakdown of one start (seconds since ctr run, as the host sees them):")
            print(f"  rootfs cache, cold build of the busybox image: "
                  f"{rootfs_cold_build(b):.2f}s (warm: a lookup)")
            print("  (host seconds since ctr run; QEMU CPU seconds; guest uptime)")
            prev, prev_cpu = 0.0, 0.0
            for what, at, qcpu, up in breakdown(b):
                c = f"cpu {qcpu:6.2f} (+{qcpu - prev_cpu:5.2f})" if qcpu is not None else ""
                print(f"  {at:6.2f}s (+{at - prev:5.2f})  {c:22s} {up:>8s}  {what}")
                prev, prev_cpu = at, qcpu if qcpu is not None else prev_cpu
            mem = memory(b)
            print(f"memory of one idle {opts.tee} container: guest RAM "
                  f"{mem['guest_ram_mib']:.0f} MiB (default); QEMU RSS "
                  f"{mem['qemu_rss_mib']:.1f} MiB, PSS {mem['qemu_pss_mib']:.1f} MiB, VMM "
                  f"python PSS {mem['vmm_py_pss_mib']:.1f} MiB; beyond guest RAM: RSS "
                  f"{mem['beyond_guest_rss_mib']:.1f} MiB, PSS {mem['beyond_guest_pss_mib']:.1f}"
                  " MiB (goal <= 64 MiB)", flush=True)
            print(f"  QEMU RSS by kind: guest RAM touched {mem['guest_ram_touched_mib']:.1f} "
                  f"MiB; kernel + initramfs files mapped for a reset "
                  f"{mem['kernel_initrd_files_mib']:.1f} MiB (shared, reclaimable); QEMU binary "
                  f"+ libraries "
                  f"{mem['qemu_files_mib']:.1f} MiB; QEMU anonymous (TCG cache, heap, devices) "
                  f"{mem['qemu_anon_mib']:.1f} MiB", flush=True)
            beyond = mem["qemu_rss_mib"] - mem["guest_ram_touched_mib"]
            print(f"  QEMU RSS beyond the guest RAM it touched: {beyond:.1f} MiB, of which "
                  f"anonymous {mem['qemu_anon_mib']:.1f} MiB", flush=True)
            guest, host = read_100mb(b)
            print(f"reading {BIG_FILES * BIG_FILE_SIZE // MIB} MiB: verity rootfs in the guest "
                  f"{guest:.2f}s, host file {host:.2f}s: {guest / host:.1f}x")
    finally:
        client.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
