"""Where the time of ``arca run --rm IMAGE`` goes, phase by phase (issue 6, ADR 0006).

Runs ``arca run --rm --tee T IMAGE`` N times per TEE, each in a fresh interpreter with the
engine's steps wrapped by timers, and prints the median of each phase: interpreter start
(``python -c pass`` with the same flags as the ``arca`` console script), imports, prepare
(run plan or image store lookup, container record, overlay mount, bundle), the runtime's
``run -d`` or ``create``, ``start``, the container itself (TD agent + workload), and the
runtime's ``delete`` with Arca's cleanup (they overlap). The image must already be in the
store (or an ``oci:`` layout).

Usage: ARCA_ROOT=... ARCA_RUN=... python bench/images/phases.py IMAGE [N]
"""

from __future__ import annotations

# Only what the interpreter has loaded anyway: the child measures the CLI's imports itself.
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PHASES = ("interpreter", "imports", "prepare", "network (namespace, pasta started)",
          "network (waiting for pasta)", "runtime create/run", "runtime start",
          "container (agent + workload)", "runtime delete + cleanup", "other")


def child(image: str, tee: str) -> None:
    t0 = time.perf_counter()
    from arca.cli.main import main
    from arca.host.containers import engine, network, spawn, state

    times: dict[str, float] = {"imports": time.perf_counter() - t0}
    marks: dict[str, float] = {}

    def timed(obj: object, attr: str, name_of: Any) -> None:
        f = getattr(obj, attr)

        def wrapper(*a: object, **k: object) -> object:
            s = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                name: str = name_of(a, k) if callable(name_of) else name_of
                times[name] = times.get(name, 0.0) + time.perf_counter() - s

        setattr(obj, attr, wrapper)

    def runtime_step(a: tuple[object, ...], _k: object) -> str:
        argv = a[0]
        assert isinstance(argv, list)
        return "runtime create/run" if "--bundle" in argv else "runtime other"

    timed(engine.Engine, "prepare", "prepare")
    timed(network, "start", "network (namespace, pasta started)")
    timed(network, "wait_ready", "network (waiting for pasta)")
    timed(spawn, "run", runtime_step)
    timed(spawn, "run_capturing_stderr", "runtime start")
    supervise = engine.Engine.supervise

    def supervised(self: engine.Engine, cid: str, **kw: Any) -> int:
        try:
            return supervise(self, cid, **kw)
        finally:
            marks["done"] = time.perf_counter()

    engine.Engine.supervise = supervised  # type: ignore[method-assign]
    store_update = state.ContainerStore.update

    def update(self: state.ContainerStore, cid: str, **changes: Any) -> state.ContainerRecord:
        if changes.get("status") in ("running", "exited"):
            marks[str(changes["status"])] = time.perf_counter()
        return store_update(self, cid, **changes)

    state.ContainerStore.update = update  # type: ignore[method-assign]
    try:
        main(["run", "--rm", "--tee", tee, image])
    except SystemExit as e:
        if e.code:
            raise
    times["total"] = time.perf_counter() - t0
    times["container (agent + workload)"] = marks["exited"] - marks["running"]
    times["runtime delete + cleanup"] = marks["done"] - marks["exited"]
    print(repr(times))


def main() -> int:
    if sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return 0
    import ast
    import statistics
    import subprocess
    image = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    py = sys.executable
    results: dict[str, dict[str, list[float]]] = {"none": {}, "sim": {}}
    for _ in range(n):
        for tee, res in results.items():
            s = time.perf_counter()
            subprocess.run([py, "-c", "pass"], check=True)
            res.setdefault("interpreter", []).append(time.perf_counter() - s)
            out = subprocess.run([py, __file__, "--child", image, tee], check=True,
                                 capture_output=True, text=True).stdout
            times = ast.literal_eval(out.strip().splitlines()[-1])
            times["other"] = times["total"] - sum(
                v for k, v in times.items() if k not in ("total", "runtime other"))
            times["total"] += res["interpreter"][-1]
            for k, v in times.items():
                res.setdefault(k, []).append(v)
    print(f"arca run --rm IMAGE, median of {n} runs per TEE, ms")
    print(f"{'phase':<30} {'--tee none':>10} {'--tee sim':>10}")
    for phase in (*PHASES, "total"):
        cells = [f"{statistics.median(r[phase]) * 1000:10.1f}" if phase in r else f"{'-':>10}"
                 for r in results.values()]
        print(f"{phase:<30} {' '.join(cells)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
