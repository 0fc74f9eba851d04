"""Each ``arca-runtime`` call of a ``sim`` container's life, timed on its own (real runc, no
containerd): ``create``, ``state`` (before start: read as ``created``), ``start`` (releases
the prestarted agent), ``delete``. This tree's front end and sim daemon against another
checkout's (``--baseline DIR``, see ``baseline.py``), alternating container by container, so
the machine's load hits both alike. Prints per call the median and quartiles (wall, ms) and
the ratio of the medians. ``start`` includes waiting for the agent to hold its ``go`` FIFO
(it is released as soon as ``create`` returns here, so that wait is part of it).

Usage: ``calls.py --baseline DIR [--runs N]``. Needs root and runc. Not a test.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from bench.startup import baseline  # noqa: E402
from tests.integration.test_runtime_lifecycle import Runtime, busybox_rootfs  # noqa: E402

RUNTIME = str(pathlib.Path(sys.executable).parent / "arca-runtime")
CALLS = ("create", "state", "start", "delete")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "40")))
    ap.add_argument("--baseline", type=pathlib.Path, required=True)
    opts = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/startup/calls.py needs root", file=sys.stderr)
        return 2
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="arca-bench-calls-"))
    os.environ.update({"ARCA_ROOT": str(tmp / "arca-root"), "ARCA_RUN": str(tmp / "arca-run")})
    for k in ("ARCA_TEE", "ARCA_RUNTIME_CONFIG"):
        os.environ.pop(k, None)
    from arca.host.simtee import client

    rt = Runtime(tmp, busybox_rootfs(tmp))
    fronts = {"this": RUNTIME,
              "base": baseline.build(opts.baseline, tmp / "baseline", tmp / "arca-run-base")}
    times: dict[str, dict[str, list[float]]] = {v: {c: [] for c in CALLS} for v in fronts}
    n = 0

    def call(front: str, *args: str) -> float:
        argv = [front, "--root", str(rt.runc_root), *args]
        with open(tmp / "stderr", "w+") as err:  # a file: the container inherits it
            t = time.perf_counter()
            res = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=err, timeout=120)
            took = time.perf_counter() - t
            err.seek(0)
            if res.returncode != 0:
                raise SystemExit(f"{' '.join(argv)}: {res.returncode} {err.read()}")
        return took

    def life(variant: str) -> dict[str, float]:
        nonlocal n
        n += 1
        cid = f"calls-{os.getpid()}-{n}"
        b = rt.bundle(cid, ["true"])
        front = fronts[variant]
        got = {"create": call(front, "create", "--bundle", str(b), cid),
               "state": call(front, "state", cid), "start": call(front, "start", cid)}
        deadline = time.monotonic() + 30
        while b"stopped" not in subprocess.run(["runc", "--root", str(rt.runc_root), "state",
                                                cid], capture_output=True).stdout:
            if time.monotonic() > deadline:
                raise SystemExit(f"{cid} did not stop")
            time.sleep(0.01)
        got["delete"] = call(front, "delete", cid)
        return got

    try:
        client.ensure_running()
        for v in fronts:  # warm-up: guest runtime, digest cache, both daemons up
            life(v)
            life(v)
        for i in range(opts.runs):
            for v in (("this", "base") if i % 2 == 0 else ("base", "this")):
                for c, t in life(v).items():
                    times[v][c].append(t)
    finally:
        client.stop()
        baseline.stop(opts.baseline, tmp / "arca-run-base")
    print(f"arca-runtime calls of a sim container, {opts.runs} interleaved lives each "
          f"(this tree vs {opts.baseline}), wall ms: median [quartiles]")
    for c in CALLS:
        line = []
        for v in fronts:
            q = statistics.quantiles(times[v][c], n=4)
            line.append(f"{v} {statistics.median(times[v][c]) * 1000:6.2f} "
                        f"[{q[0] * 1000:6.2f} {q[2] * 1000:6.2f}]")
        ratio = statistics.median(times["this"][c]) / statistics.median(times["base"][c])
        print(f"  {c:7s} " + "   ".join(line) + f"   ratio {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
