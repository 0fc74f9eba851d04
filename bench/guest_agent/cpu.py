"""CPU of the agent's start in the shipped guest runtime: a no-KBS sim TD (descriptor, process,
TOML init-data with a policy; report from an in-process sim device; exec stubbed out), against
a bare interpreter of the same runtime, runs interleaved; user + system CPU of each child
(``getrusage``), medians. ``--other ROOT`` adds a runtime built elsewhere (e.g. from another
checkout, by ``arca.host.guestruntime.ensure_guest_runtime(ROOT)``), interleaved too, and
prints the ratio of the agents' CPU over their bare interpreters. Not a test: no assertions.

Usage: python bench/guest_agent/cpu.py [--runs N] [--other ROOT]
"""

from __future__ import annotations

import argparse
import glob
import json
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from tests.support.guest_simdevice import SimDeviceServer  # noqa: E402

from arca.host.guestruntime import ensure_guest_runtime  # noqa: E402
from arca.host.simtee.platform import init_data_hash  # noqa: E402
from arca.wire.descriptor import LaunchDescriptor, ProcessSpec  # noqa: E402

SPEC = ProcessSpec(("/bin/true",), "/", 0, 0, ("PATH=/usr/bin:/bin",))
DESCRIPTOR = LaunchDescriptor("sim", "sha256:" + "5" * 64, "sha256:" + "6" * 64, SPEC)
INIT = (b'version = "0.1.0"\n[data]\npolicy = \'\'\'\nallow_env = ["APP_*"]\n'
        b'orchestrator_env = ["*_SERVICE_PORT"]\n\'\'\'\n')


def command(root: pathlib.Path) -> list[str]:
    lib = pathlib.Path(sorted(glob.glob(str(root / "guest-runtime" / "*" / "lib")))[0])
    loader = next(p.name for p in lib.iterdir() if p.name.startswith("ld-linux"))
    return [str(lib / loader), "--library-path", str(lib), str(lib.parent / "bin" / "python3"),
            "-I", "-S", "-B", "-c"]


def cpu_ms(cmd: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = subprocess.run(cmd, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"run failed: {res.stderr.strip()[-500:]}")
    return 1e3 * (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--other", type=pathlib.Path, help="root of another built guest runtime")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="arca-bench-") as tmp:
        t = pathlib.Path(tmp)
        ensure_guest_runtime(t / "root")
        roots = {"this": t / "root", **({"other": args.other} if args.other else {})}
        dev = t / "tee"
        dev.mkdir()
        (dev / "descriptor.json").write_text(json.dumps(DESCRIPTOR.to_json()))
        (dev / "process.json").write_text(json.dumps({
            "args": ["/bin/true"], "cwd": "/",
            "env": ["PATH=/usr/bin:/bin", "HOSTNAME=td", "APP_MODE=x"]}))
        (dev / "init-data.toml").write_bytes(INIT)
        device = SimDeviceServer(str(dev / "sim.sock"), DESCRIPTOR.measurement(),
                                 init_data_hash(INIT))
        times: dict[tuple[str, str], list[float]] = {
            (k, w): [] for k in roots for w in ("bare", "agent")}
        try:
            for i in range(args.runs):
                for name, root in roots.items():
                    run = t / f"run-{name}-{i}"
                    run.mkdir()
                    code = ("import os; from arca.guest.agent import main, Paths; "
                            "os.execvpe = lambda f, a, e: os._exit(0); "
                            f"main(Paths({str(dev)!r}, {str(run)!r}))")
                    times[(name, "agent")].append(cpu_ms(command(root) + [code]))
                    times[(name, "bare")].append(cpu_ms(command(root) + ["pass"]))
        finally:
            device.close()
    over = {}
    print(f"agent start without a KBS, shipped runtime ({args.runs} runs each, interleaved, "
          "CPU user+sys, medians):")
    for name in roots:
        bare = statistics.median(times[(name, "bare")])
        agent = statistics.median(times[(name, "agent")])
        over[name] = agent - bare
        print(f"  {name:6s} bare interpreter {bare:6.1f} ms   agent {agent:6.1f} ms   "
              f"agent over bare {over[name]:6.1f} ms   ratio {agent / bare:.2f}")
    if args.other:
        print(f"  this/other agent-over-bare ratio {over['this'] / over['other']:.2f} "
              f"({over['this'] - over['other']:+.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
