"""Container start-up through containerd: plain ``runc`` vs ``arca-runtime`` with ``sim``.

The same busybox image (built with umoci, pushed to a local docker-registry, pulled by a
private containerd) is run with ``ctr run --rm`` under both runtimes, interleaved so drift in
machine load hits both equally, after warm-up runs (guest runtime built, sim daemon started,
rootfs digest cached). Prints medians, p90s and the median ratio; the goal is ≤ 1.3.
A third variant runs ``arca-runtime`` without a TEE: the cost of the wrapper alone. A fourth,
``arca-sim-py``, is the same front end built without a code stamp, so every TEE ``create``
starts Python as before the daemon took it over (ADR 0003): the before/after in one run.
``--baseline DIR`` adds ``arca-sim-base``: the front end and sim daemon of another checkout
(``baseline.py``), interleaved with the others — another tree's before/after in one run.

Usage: ``run.py [--runs N] [--cmd "true"] [--baseline DIR] [--no-py]`` (also ``BENCH_RUNS``).
Needs root. Not a test.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from tests.support.containerd import run_containerd  # noqa: E402
from tests.support.images import build_busybox_image, push  # noqa: E402
from tests.support.registry import run_registry  # noqa: E402

RUNTIME = str(pathlib.Path(sys.executable).parent / "arca-runtime")


def p90(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(round(0.9 * len(xs))) - 1)]


def build_python_create_front_end(tmp: pathlib.Path) -> str:
    """``frontend.c`` compiled as ``scripts/setup.sh`` does, minus the code stamp: TEE creates
    then always run in a fresh Python (the path before the sim daemon served them)."""
    import subprocess
    import sysconfig

    out = tmp / "py-create" / "arca-runtime"
    out.parent.mkdir()
    py = str(pathlib.Path(sys.executable).parent / "python3")
    subprocess.run(["gcc", "-O2", f'-DARCA_PYTHON="{py}"', f'-DARCA_SRC="{REPO / "src"}"',
                    f'-DARCA_SITE="{sysconfig.get_paths()["purelib"]}"', "-o", str(out),
                    str(REPO / "src/arca/host/runtime/frontend.c")], check=True)
    return str(out)


def print_baseline(times: dict[str, list[float]], name: str, base: str) -> None:
    """This tree against the baseline's: ratio of medians, and the median of the per-round
    differences (both ran in the same round, moments apart)."""
    diffs = [a - b for a, b in zip(times[name], times[base], strict=True)]
    print(f"ratio {name}/{base} (medians): "
          f"{statistics.median(times[name]) / statistics.median(times[base]):.3f}; "
          f"same-round difference median {statistics.median(diffs) * 1000:+.1f} ms, "
          f"quartiles {statistics.quantiles(diffs, n=4)[0] * 1000:+.1f} / "
          f"{statistics.quantiles(diffs, n=4)[2] * 1000:+.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "30")))
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--cmd", default="true", help="command run in the container")
    ap.add_argument("--baseline", type=pathlib.Path,
                    help="another checkout whose front end and daemon run as arca-sim-base")
    ap.add_argument("--no-py", action="store_true", help="leave out the arca-sim-py variant")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/startup needs root", file=sys.stderr)
        return 2
    # Byte-compile Arca's sources as an installed package would be: with
    # PYTHONDONTWRITEBYTECODE set (common in CI images) an editable checkout is otherwise
    # recompiled on every arca-runtime call, which measures the compiler, not the runtime.
    import compileall

    compileall.compile_dir(str(REPO / "src"), quiet=1)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="arca-bench-startup-"))
    arca_env = {"ARCA_ROOT": str(tmp / "arca-root"), "ARCA_RUN": str(tmp / "arca-run")}
    os.environ.update(arca_env)
    from arca.host.simtee import client

    ref = build_busybox_image(tmp / "layout", "bench")
    try:
        with run_registry(tmp / "registry") as reg, \
                run_containerd(tmp / "ctrd", env=arca_env) as ctrd:
            image = push(ref, reg.host, "bench/busybox:latest")
            ctrd.pull_plain_http(image)
            py_runtime = build_python_create_front_end(tmp)
            variants = {
                "runc": [*ctrd.run_args("runc")],
                # Pass-through (no TEE): what the Python wrapper alone costs.
                "arca-none": [*ctrd.run_args(RUNTIME)],
                "arca-sim": [*ctrd.run_args(RUNTIME), "--annotation", "io.arca.tee=sim"],
                "arca-sim-py": [*ctrd.run_args(py_runtime), "--annotation", "io.arca.tee=sim"],
            }
            if opts.no_py:
                del variants["arca-sim-py"]
            if opts.baseline:
                from bench.startup import baseline

                base_runtime = baseline.build(opts.baseline, tmp / "baseline",
                                              tmp / "arca-run-base")
                variants["arca-sim-base"] = [*ctrd.run_args(base_runtime), "--annotation",
                                             "io.arca.tee=sim"]
            times: dict[str, list[float]] = {k: [] for k in variants}
            n = 0

            def one(name: str) -> float:
                nonlocal n
                n += 1
                start = time.perf_counter()
                res = ctrd.ctr("run", "--rm", *variants[name], image, f"b{n}",
                               *opts.cmd.split(), check=False)
                elapsed = time.perf_counter() - start
                if res.returncode != 0:
                    raise SystemExit(f"{name} run failed ({res.returncode}): {res.stderr}")
                return elapsed

            for _ in range(opts.warmup):
                for name in variants:
                    one(name)
            for i in range(opts.runs):
                k = i % len(variants)
                order = list(variants)[k:] + list(variants)[:k]
                for name in order:
                    times[name].append(one(name))
    finally:
        client.stop()
        if opts.baseline:
            from bench.startup import baseline

            baseline.stop(opts.baseline, tmp / "arca-run-base")
    base = statistics.median(times["runc"])
    print(f"ctr run --rm <busybox> {opts.cmd}: {opts.runs} interleaved runs each "
          f"(after {opts.warmup} warm-up)")
    for name, xs in times.items():
        med = statistics.median(xs)
        print(f"  {name:10s} median {med * 1000:7.1f} ms   p90 {p90(xs) * 1000:7.1f} ms   "
              f"ratio {med / base:5.2f}")
    print(f"ratio arca-sim/runc (medians): {statistics.median(times['arca-sim']) / base:.2f} "
          "(goal <= 1.3)")
    if opts.baseline:
        print_baseline(times, "arca-sim", "arca-sim-base")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
