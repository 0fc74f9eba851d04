"""Guest-side start-up cost: the same busybox container under real runc, plain vs. through the
Arca agent (sim evidence from an in-process device, measurement + policy checks, exec), runs
interleaved; plus tree-digest throughput and the guest runtime's fast path.

Prints medians and the ratio. Needs root, runc and busybox-static. Not a test: no assertions.
"""

from __future__ import annotations

import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from tests.support.guest_td import Td, busybox_rootfs  # noqa: E402

from arca.host.guestruntime import ensure_guest_runtime  # noqa: E402
from arca.host.treedigest import tree_digest  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "30"))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    if os.geteuid() != 0:
        print("bench/guest_agent: needs root (runc)")
        return 1
    with tempfile.TemporaryDirectory(prefix="arca-bench-") as tmp:
        t = pathlib.Path(tmp)
        build = timed(lambda: ensure_guest_runtime(t / "root"))
        fast = statistics.median(timed(lambda: ensure_guest_runtime(t / "root"))
                                 for _ in range(200))
        gr = ensure_guest_runtime(t / "root")
        rootfs = busybox_rootfs(t / "rootfs")
        size = sum(p.stat().st_size for p in gr.path.rglob("*") if p.is_file()) / 1e6
        digest = timed(lambda: tree_digest(gr.path))

        td = Td(t / "td", gr, rootfs, ["/bin/echo", "hello"])
        plain = Td(t / "plain", gr, rootfs, ["/bin/echo", "hello"])
        plain.config["process"]["args"] = ["/bin/echo", "hello"]
        arca_times, runc_times = [], []
        try:
            for _ in range(RUNS):
                for bundle, out in ((plain, runc_times), (td, arca_times)):
                    start = time.perf_counter()
                    code, stdout, err = bundle.run()
                    out.append(time.perf_counter() - start)
                    if code != 0 or stdout != "hello\n":
                        print(f"run failed ({code}): {err}")
                        return 1
                    subprocess.run(["runc", "--root", str(bundle.state), "delete", "--force",
                                    bundle.id], capture_output=True)
        finally:
            td.close()
            plain.close()
    r, a = statistics.median(runc_times), statistics.median(arca_times)
    print(f"guest runtime: {size:.1f} MB, build {build:.2f} s, fast path {fast * 1e6:.0f} us, "
          f"tree digest {size / digest:.0f} MB/s")
    print(f"runc run, busybox echo ({RUNS} runs each, interleaved):")
    print(f"  plain runc        median {r * 1e3:7.1f} ms")
    print(f"  arca agent (sim)  median {a * 1e3:7.1f} ms   ratio {a / r:.2f}  "
          f"(agent cost {1e3 * (a - r):.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
