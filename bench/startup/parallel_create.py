"""TD create of a small image while a large-rootfs create is in flight (issue 13, item 15).

``arca-runtime create`` (the C front end, the sim daemon's create, ``runc run --detach``) of a
small busybox bundle, timed alone and while another container's create hashes a large rootfs
(a plain directory of ``--large-mib`` MiB: not an overlay, so its digest is never cached and
every round hashes it again). Both daemon modes run in the same session, interleaved round by
round: ``serial`` (``ARCA_SIMTEE_CONTROL_CONCURRENCY=1``: one control request at a time, the
daemon before the fix) and ``parallel`` (the default). Prints medians and the ratios
contended/alone per mode and serial/parallel for the contended create.

Usage: ``parallel_create.py [--rounds N] [--large-mib M]``. Needs root, runc, umoci. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from tests.support.images import build_busybox_image, run  # noqa: E402

RUNTIME = str(pathlib.Path(sys.executable).parent / "arca-runtime")


def bundle(base: pathlib.Path, name: str, rootfs: pathlib.Path) -> pathlib.Path:
    b = base / "bundles" / name
    b.mkdir(parents=True)
    subprocess.run(["runc", "spec", "--bundle", str(b)], check=True)
    cfg = json.loads((b / "config.json").read_text())
    cfg["root"] = {"path": str(rootfs), "readonly": True}
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["true"]
    cfg["annotations"] = {"io.arca.tee": "sim"}
    (b / "config.json").write_text(json.dumps(cfg))
    return b


def rt(base: pathlib.Path, *args: str) -> list[str]:
    return [RUNTIME, "--root", str(base / "runc"), "--log", str(base / "log.json"),
            "--log-format", "json", *args]


def create(base: pathlib.Path, template: pathlib.Path, cid: str) -> subprocess.Popen[bytes]:
    """``arca-runtime create`` of a fresh bundle (create rewrites its config.json) made from
    ``template``, as containerd makes one per container."""
    b = base / "bundles" / cid
    b.mkdir()
    shutil.copy(template / "config.json", b / "config.json")
    return subprocess.Popen(rt(base, "create", "--bundle", str(b), cid),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def delete(base: pathlib.Path, cid: str) -> None:
    subprocess.run(rt(base, "delete", "--force", cid), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def restart_daemon(concurrency: int) -> None:
    from arca.host.simtee import client

    client.stop()
    os.environ["ARCA_SIMTEE_CONTROL_CONCURRENCY"] = str(concurrency)
    client.ensure_running()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_RUNS", "8")))
    ap.add_argument("--large-mib", type=int, default=1024)
    opts = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("runc") or not shutil.which("umoci"):
        print("bench/startup/parallel_create.py needs root, runc and umoci", file=sys.stderr)
        return 2
    base = pathlib.Path(tempfile.mkdtemp(prefix="arca-bench-pc-"))
    os.environ.update({"ARCA_ROOT": str(base / "root"), "ARCA_RUN": str(base / "run")})
    os.environ.pop("ARCA_TEE", None)
    os.environ.pop("ARCA_RUNTIME_CONFIG", None)
    try:
        ref = build_busybox_image(base / "layout", "v1")
        run("umoci", "unpack", "--image", ref, str(base / "small"))
        shutil.copytree(base / "small" / "rootfs", base / "large", symlinks=True)
        chunk = os.urandom(1 << 20)
        for i in range(opts.large_mib):  # 1 MiB files: hashing cost, not metadata, dominates
            (base / "large" / f"blob{i:05d}").write_bytes(chunk[i % 251:] + chunk[:i % 251])
        small_b = bundle(base, "small", base / "small" / "rootfs")
        large_b = bundle(base, "large", base / "large")
        times: dict[str, dict[str, list[float]]] = {
            m: {"alone": [], "contended": [], "large": []} for m in ("serial", "parallel")}
        n = 0
        for rnd in range(opts.rounds + 1):  # round 0 warms up (guest runtime, small digest)
            for mode, conc in (("serial", 1), ("parallel", 16)):
                restart_daemon(conc)
                n += 1
                cid = f"pc-small-{os.getpid()}-{n}"
                t = time.monotonic()
                assert create(base, small_b, cid).wait() == 0, (base / "log.json").read_text()
                alone = time.monotonic() - t
                delete(base, cid)
                big = f"pc-large-{os.getpid()}-{n}"
                t_big = time.monotonic()
                large = create(base, large_b, big)
                time.sleep(0.3)  # the daemon is hashing the large rootfs by now
                cid = f"pc-small-{os.getpid()}-{n}b"
                t = time.monotonic()
                assert create(base, small_b, cid).wait() == 0, (base / "log.json").read_text()
                contended = time.monotonic() - t
                assert large.wait() == 0, "large create failed"
                large_s = time.monotonic() - t_big
                delete(base, cid)
                delete(base, big)
                if rnd:
                    times[mode]["alone"].append(alone)
                    times[mode]["contended"].append(contended)
                    times[mode]["large"].append(large_s)
        med = {m: {k: statistics.median(v) for k, v in d.items()} for m, d in times.items()}
        print(f"small TD create (arca-runtime create), {opts.rounds} rounds, large rootfs "
              f"{opts.large_mib} MiB, medians:")
        for m in ("serial", "parallel"):
            d = med[m]
            print(f"  {m:8s} alone {d['alone'] * 1e3:7.1f} ms   behind the large create "
                  f"{d['contended'] * 1e3:7.1f} ms ({d['contended'] / d['alone']:.2f}x alone)"
                  f"   large create {d['large']:.2f} s")
        print(f"  contended small create, serial / parallel: "
              f"{med['serial']['contended'] / med['parallel']['contended']:.1f}x")
    finally:
        from arca.host.simtee import client

        client.stop()
        subprocess.run(["umount", "-R", "-l", str(base / "run")], stderr=subprocess.DEVNULL)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
