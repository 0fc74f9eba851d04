"""Start-up of the commands typed often, this tree against another checkout, in one run.

``arca ps``, ``images``, ``logs``, ``inspect``, ``version`` and ``kbs admin
get-reference-values`` (goal ≤ 80 ms each, ``run.py`` part 3), the warm ``arca run --rm --tee
none IMG true`` (each tree in an ``ARCA_ROOT`` of its own: a run plan is a tree's), plus
``python -c "import M"``
for the modules every ``arca run`` and ``arca-runtime`` call import (``--module``), each run
by this tree's ``.venv`` and by the ``--baseline`` checkout's (its own ``.venv``: ``make
setup`` there), interleaved run by run over one ``ARCA_ROOT`` (one image, one detached
container, one KBS), after warm-up. Prints, per command, the medians of wall time and of the
child's CPU time (user + system, from ``wait4``: on a loaded machine the steadier of the two)
and this/baseline ratios of the medians.

Usage: ``python bench/cli/startup.py --baseline DIR [--runs N]``. Needs root, runc,
docker-registry, skopeo, umoci. Not a test.
"""

from __future__ import annotations

import argparse
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

from tests.support.images import build_busybox_image, push  # noqa: E402
from tests.support.registry import free_port, run_registry  # noqa: E402

MODULES = ("arca.host.containers.attach", "arca.host.simtee.client", "arca.kbs.admin_client")


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of ``cmd``, which must succeed."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): "
                         f"{err.decode(errors='replace')[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=pathlib.Path, required=True,
                    help="another checkout of Arca with its own .venv")
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "30")))
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--module", action="append", default=[],
                    help=f"module whose import is timed too (default: {', '.join(MODULES)})")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/cli/startup.py needs root", file=sys.stderr)
        return 2
    trees = {"this": REPO, "base": opts.baseline.resolve()}
    for name, tree in trees.items():
        if not (tree / ".venv/bin/arca").exists():
            raise SystemExit(f"{name} tree {tree}: no .venv/bin/arca (run make setup in it)")
        # byte-compiled as an install is (run.py does the same)
        subprocess.run([str(tree / ".venv/bin/python"), "-m", "compileall", "-q",
                        str(tree / "src")], capture_output=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="arca-bench-startup-"))
    run_dir = tempfile.mkdtemp(prefix="abs-", dir="/tmp")
    env = {**os.environ, "ARCA_ROOT": str(tmp / "arca"), "ARCA_RUN": run_dir}
    arca = str(REPO / ".venv/bin/arca")
    kbs = None
    run_dirs = [run_dir]
    try:
        with run_registry(tmp / "registry") as reg:
            ref = push(build_busybox_image(tmp / "layout", "v1"), reg.host, "bench/startup:v1")
            subprocess.run([arca, "pull", "-q", "--insecure", ref], env=env, check=True,
                           capture_output=True)
            subprocess.run([arca, "run", "-d", "--name", "bench-startup", "--tee", "none", ref,
                            "sleep", "600"], env=env, check=True, capture_output=True)
            port = free_port()
            work = tmp / "kbs"
            work.mkdir()
            subprocess.run([arca, "kbs", "keygen", "--out", "admin"], env=env, cwd=work,
                           check=True, capture_output=True)
            kbs = subprocess.Popen([arca, "kbs", "serve", "--listen", f"127.0.0.1:{port}",
                                    "--insecure-http", "--data-dir", str(work / "data"),
                                    "--admin-public-key", "admin.pub"], env=env, cwd=work,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            from arca._internal.net import wait_until_serving

            wait_until_serving(kbs, "127.0.0.1", port, what="kbs", timeout=60)
            admin_env = {**env, "ARCA_KBS_URL": f"http://127.0.0.1:{port}",
                         "ARCA_KBS_ADMIN_KEY": str(work / "admin.key")}
            commands: dict[str, tuple[list[str], dict[str, str]]] = {
                "ps": (["ps"], env), "images": (["images"], env),
                "logs": (["logs", "bench-startup"], env),
                "inspect": (["inspect", "bench-startup"], env), "version": (["version"], env),
                "kbs admin get-reference-values": (
                    ["kbs", "admin", "get-reference-values"], admin_env)}
            variants = {(cmd, tree): ([str(trees[tree] / ".venv/bin/arca"), *args], e)
                        for cmd, (args, e) in commands.items() for tree in trees}
            for mod in opts.module or MODULES:
                for tree in trees:
                    variants[(f"import {mod}", tree)] = (
                        [str(trees[tree] / ".venv/bin/python"), "-c", f"import {mod}"], env)
            for tree in trees:  # each tree's warm run: its own store, image pulled, plan made
                tree_env = {**env, "ARCA_ROOT": str(tmp / f"arca-{tree}"),
                            "ARCA_RUN": tempfile.mkdtemp(prefix=f"abs-{tree}-", dir="/tmp")}
                run_dirs.append(tree_env["ARCA_RUN"])
                tree_arca = str(trees[tree] / ".venv/bin/arca")
                subprocess.run([tree_arca, "pull", "-q", "--insecure", ref], env=tree_env,
                               check=True, capture_output=True)
                variants[("run --rm --tee none IMG true", tree)] = (
                    [tree_arca, "run", "--rm", "--tee", "none", ref, "true"], tree_env)
            walls: dict[tuple[str, str], list[float]] = {k: [] for k in variants}
            cpus: dict[tuple[str, str], list[float]] = {k: [] for k in variants}
            for i in range(opts.warmup + opts.runs):
                for k, (cmd, e) in variants.items():
                    wall, cpu = timed(cmd, e)
                    if i >= opts.warmup:
                        walls[k].append(wall)
                        cpus[k].append(cpu)
    finally:
        if kbs is not None:
            kbs.kill()
            kbs.wait()
        subprocess.run([arca, "rm", "-f", "bench-startup"], env=env, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        for d in run_dirs:
            shutil.rmtree(d, ignore_errors=True)
    print(f"medians of {opts.runs} interleaved runs (after {opts.warmup} warm-up); "
          f"this = {REPO}, base = {trees['base']}; load {os.getloadavg()[0]:.1f}")
    print(f"  {'command':<44} {'wall this':>9} {'base':>7} {'ratio':>6}   "
          f"{'CPU this':>8} {'base':>7} {'ratio':>6}")
    for cmd in dict.fromkeys(k[0] for k in variants):
        w = {t: statistics.median(walls[(cmd, t)]) for t in trees}
        c = {t: statistics.median(cpus[(cmd, t)]) for t in trees}
        print(f"  {cmd:<44} {w['this'] * 1000:7.1f}ms {w['base'] * 1000:5.1f}ms "
              f"{w['this'] / w['base']:6.2f}   {c['this'] * 1000:6.1f}ms "
              f"{c['base'] * 1000:5.1f}ms {c['this'] / c['base']:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
