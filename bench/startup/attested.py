"""Container start to first workload output through containerd: plain ``runc``, Arca ``sim``
without a KBS, and Arca ``sim`` with attestation and one secret (real ``arca kbs serve``).

The same busybox image (umoci → local docker-registry → private containerd) runs with
``ctr run --rm`` under the three variants, interleaved (order alternating) after warm-up runs.
The clock starts when ``ctr run`` is launched and stops at the first byte of the workload's
stdout; the attested variant's workload also prints the secret, checked after each run.

Breakdown, measured from outside (no instrumentation inside the TD):

* runtime: median duration of the OCI runtime's ``create`` and ``start`` calls, recorded by a
  thin wrapper script used as ``--runc-binary`` in a separate, non-timed pass (the wrapper
  costs a fork, so it is kept out of the comparison);
* agent start-up (sim, no KBS): first output of ``arca-sim`` minus ``runc``, minus the extra
  ``create`` + ``start`` time of the runtime — the agent's interpreter start, evidence and
  checks, exec;
* RCAR round trips: each HTTP exchange of the TD with the KBS (auth, attest, resource) as seen
  by a TCP proxy in front of the KBS (accept to close), medians, from a separate, non-timed
  pass: the timed runs talk to the KBS directly, because the proxy (threads in this process)
  would sit in the measured path. The two passes differ in init-data (the URL), so both
  init-data documents are granted the secret;
* verification: the KBS's own attest latency (``arca_kbs_attest_seconds`` from ``/metrics``:
  sim evidence verification + Rego attestation policy + token signing);
* attested extra: ``arca-sim+kbs`` minus ``arca-sim``. The round trips overlap the agent's own
  work (it sends ``auth`` first and loads ``cryptography``'s compiled core and makes its X25519
  key while the broker answers), so the two do not add up; the CPU line above says how much of
  the extra is the agent's work.

CPU inside the container (noise-robust, as other work shares the machine): every timed run is
placed in a cgroup under one parent per variant (``ctr run --cgroup``); the parent's
``cpuacct.usage`` grows by the CPU time of everything that ran in the container — runc's init,
the agent, the workload — while containerd, the shim, ``create`` and the sim platform daemon
stay outside it. Medians of the per-run deltas (cgroup v1 ``cpuacct`` only; skipped otherwise).

``--baseline DIR`` adds ``arca-sim-base`` and ``arca-sim+kbs-base``: the front end and sim
daemon of another checkout (``baseline.py``), interleaved with the others.

Goal: attested start ≤ 1.5 × plain runc. Usage: ``attested.py [--runs N] [--warmup N]
[--baseline DIR]`` (also ``BENCH_RUNS``). Needs root. Not a test: no assertions beyond "the
runs worked".
"""

from __future__ import annotations

import argparse
import base64
import contextlib
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

from tests.support.containerd import Containerd, run_containerd  # noqa: E402
from tests.support.images import build_busybox_image, push  # noqa: E402
from tests.support.kbs_td import RecordingProxy  # noqa: E402
from tests.support.registry import run_registry  # noqa: E402

RUNTIME = str(pathlib.Path(sys.executable).parent / "arca-runtime")
CPUACCT = pathlib.Path("/sys/fs/cgroup/cpuacct")
SECRET = b"bench-secret-0123456789abcdef"
CMD = ["sh", "-c", "echo ready; cat /run/arca/secrets/k 2>/dev/null; exit 0"]


def init_data(url: str) -> bytes:
    return (f'version = "0.1.0"\nalgorithm = "sha384"\n[data]\nkbs_url = "{url}"\n'
            "resources = '''\n[[resource]]\npath = \"bench/key/k\"\nname = \"k\"\n'''\n"
            "agent = 'insecure_kbs = true'\n").encode()


def med_ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:7.1f} ms" if xs else "    n/a"


def first_output(ctrd: Containerd, args: list[str]) -> tuple[float, float, bytes]:
    """(seconds to the first stdout byte, seconds to exit, all stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(ctrd.ctr_argv(*args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    first = os.read(proc.stdout.fileno(), 1)
    t_first = time.perf_counter() - start
    rest, err = proc.communicate(timeout=120)
    t_exit = time.perf_counter() - start
    if proc.returncode != 0 or not first:
        raise SystemExit(f"ctr {' '.join(args)} failed ({proc.returncode}): {err.decode()}")
    return t_first, t_exit, first + rest


def wrapper(path: pathlib.Path, real: str, log: pathlib.Path) -> str:
    """An OCI runtime that records the duration of each call of ``real`` (breakdown only)."""
    path.write_text(f'#!/bin/sh\ns=$(date +%s%N)\n"{real}" "$@"\nrc=$?\n'
                    f'echo "$s $(date +%s%N) $*" >> "{log}"\nexit $rc\n')
    path.chmod(0o755)
    return str(path)


def call_times(log: pathlib.Path, command: str) -> list[float]:
    out = []
    for line in log.read_text().splitlines() if log.exists() else []:
        start, end, *argv = line.split()
        if command in argv:
            out.append((int(end) - int(start)) / 1e9)
    return out


def kbs_attest_seconds(url: str) -> float | None:
    import httpx

    text = httpx.get(url + "/metrics", timeout=5).text
    total = sum(float(v) for v in re.findall(r"arca_kbs_attest_seconds_sum\S* (\S+)", text))
    count = sum(float(v) for v in re.findall(r"arca_kbs_attest_seconds_count\S* (\S+)", text))
    return total / count if count else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "30")))
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--baseline", type=pathlib.Path,
                    help="another checkout whose front end and daemon run as *-base variants")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/startup/attested.py needs root", file=sys.stderr)
        return 2
    import compileall

    compileall.compile_dir(str(REPO / "src"), quiet=1)  # as bench/startup/run.py, see there
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="arca-bench-attested-"))
    arca_env = {"ARCA_ROOT": str(tmp / "arca-root"), "ARCA_RUN": str(tmp / "arca-run")}
    os.environ.update(arca_env)
    from tests.support.kbs import admin_keypair, start_kbs

    from arca.host.policygen import generate
    from arca.host.simtee import client, locations
    from arca.kbs.admin_client import AdminClient

    layout = tmp / "layout"
    ref = build_busybox_image(layout, "bench", cmd=CMD)
    client.ensure_running()
    kbs_dir = tmp / "kbs"
    kbs_dir.mkdir()
    admin_key, admin_pub = admin_keypair(kbs_dir)
    kbs = start_kbs(kbs_dir, "--trust-sim-root", str(locations.root_cert_path()),
                    "--admin-public-key", str(admin_pub))
    proxy = RecordingProxy(("127.0.0.1", int(kbs.url.rsplit(":", 1)[1])))
    times: dict[str, list[float]] = {}
    exits: dict[str, list[float]] = {}
    calls: dict[str, tuple[list[float], list[float]]] = {}
    try:
        raw, raw_proxied = init_data(kbs.url), init_data(proxy.url)
        gen = generate(f"oci:{layout}:bench", init_data=raw)
        gen_proxied = generate(f"oci:{layout}:bench", init_data=raw_proxied).merge(
            gen.reference_values())
        if opts.baseline:  # the baseline's TDs may measure differently: grant them too
            from bench.startup import baseline

            gen_proxied = gen_proxied.merge({
                name: [*values, *baseline.reference_values(opts.baseline, f"oci:{layout}:bench",
                                                          raw, arca_env).get(name, [])]
                for name, values in gen_proxied.reference_values().items()})
        admin = AdminClient(kbs.url, admin_key)
        admin.set_resource("bench/key/k", SECRET)
        admin.set_policy("resource", gen.policy_text)
        for name, values in gen_proxied.reference_values().items():
            admin.set_reference_value(name, values)
        admin.close()
        ann_sim = ["--annotation", "io.arca.tee=sim"]

        def ann_kbs_for(doc: bytes) -> list[str]:
            return [*ann_sim, "--annotation",
                    f"io.arca.init-data={base64.b64encode(doc).decode()}"]
        ann_kbs = ann_kbs_for(raw)
        with run_registry(tmp / "registry") as reg, \
                run_containerd(tmp / "ctrd", env=arca_env) as ctrd:
            image = push(ref, reg.host, "bench/attested:latest")
            ctrd.pull_plain_http(image)
            variants = {
                "runc": ctrd.run_args("runc"),
                "arca-sim": [*ctrd.run_args(RUNTIME), *ann_sim],
                "arca-sim+kbs": [*ctrd.run_args(RUNTIME), *ann_kbs],
            }
            if opts.baseline:
                from bench.startup import baseline

                base_runtime = baseline.build(opts.baseline, tmp / "baseline",
                                              tmp / "arca-run-base")
                variants["arca-sim-base"] = [*ctrd.run_args(base_runtime), *ann_sim]
                variants["arca-sim+kbs-base"] = [*ctrd.run_args(base_runtime), *ann_kbs]
            times = {k: [] for k in variants}
            exits = {k: [] for k in variants}
            cpu = {k: [] for k in variants}
            n = 0
            parent = f"arca-bench-{os.getpid()}"

            def one(name: str, runtime_args: list[str] | None = None) -> tuple[float, float]:
                nonlocal n
                n += 1
                group = CPUACCT / parent / name
                if runtime_args is None and CPUACCT.is_dir():
                    group.mkdir(parents=True, exist_ok=True)
                    before = int((group / "cpuacct.usage").read_text())
                    cg = ["--cgroup", f"/{parent}/{name}/a{n}"]
                else:
                    cg = []
                t_first, t_exit, out = first_output(
                    ctrd, ["run", "--rm", "--net-host", *cg,
                           *(runtime_args or variants[name]), image, f"a{n}"])
                if cg:
                    cpu[name].append((int((group / "cpuacct.usage").read_text()) - before) / 1e9)
                if name.startswith("arca-sim+kbs") and SECRET not in out:
                    raise SystemExit(f"attested run did not receive its secret: {out!r}")
                return t_first, t_exit

            for _ in range(opts.warmup):
                for name in variants:
                    one(name)
            for i in range(opts.runs):
                order = list(variants) if i % 2 == 0 else list(reversed(variants))
                for name in order:
                    t_first, t_exit = one(name)
                    times[name].append(t_first)
                    exits[name].append(t_exit)
            # Breakdown pass through the recording proxy (not timed above).
            for _ in range(max(5, opts.runs // 2)):
                one("arca-sim+kbs", [*ctrd.run_args(RUNTIME), *ann_kbs_for(raw_proxied)])
            rcar = {kind: [e.closed - e.opened for e in proxy.exchanges
                           if e.closed and e.request_line.startswith(kind)]
                    for kind in ("POST /kbs/v0/auth", "POST /kbs/v0/attest",
                                 "GET /kbs/v0/resource")}
            verification = kbs_attest_seconds(kbs.url)
            # Breakdown pass: the runtimes behind a recording wrapper, not timed above.
            for name, real, extra in (("runc", "runc", []), ("arca", RUNTIME, ann_sim)):
                log = tmp / f"calls-{name}.log"
                wrapped = wrapper(tmp / f"wrap-{name}", real, log)
                for _ in range(max(5, opts.runs // 3)):
                    one("runc" if name == "runc" else "arca-sim",
                        [*ctrd.run_args(wrapped), *extra])
                calls[name] = (call_times(log, "create"), call_times(log, "start"))
    finally:
        proxy.close()
        kbs.kill()
        client.stop()
        if opts.baseline:
            from bench.startup import baseline

            baseline.stop(opts.baseline, tmp / "arca-run-base")
        for d in sorted(pathlib.Path("/sys/fs/cgroup").glob(f"*/arca-bench-{os.getpid()}/*"),
                        reverse=True) + list(pathlib.Path("/sys/fs/cgroup").glob(
                            f"*/arca-bench-{os.getpid()}")):
            with contextlib.suppress(OSError):
                d.rmdir()
    base = statistics.median(times["runc"])
    print(f"ctr run --rm <busybox> (first workload output): {opts.runs} interleaved runs "
          f"each, after {opts.warmup} warm-up")
    for name in times:
        med = statistics.median(times[name])
        print(f"  {name:13s} first output {med * 1000:7.1f} ms   exit "
              f"{statistics.median(exits[name]) * 1000:7.1f} ms   ratio {med / base:5.2f}")
    if all(cpu.values()):
        cpu_base = statistics.median(cpu["runc"])
        print("CPU in the container (cpuacct, medians): " + ", ".join(
            f"{name} {statistics.median(xs) * 1000:.1f} ms ({statistics.median(xs) / cpu_base:.2f})"
            for name, xs in cpu.items()))
    attested = statistics.median(times["arca-sim+kbs"]) / base
    print(f"ratio attested/runc (medians): {attested:.2f} (goal <= 1.5)")
    if opts.baseline:
        from bench.startup.run import print_baseline

        print_baseline(times, "arca-sim", "arca-sim-base")
        print_baseline(times, "arca-sim+kbs", "arca-sim+kbs-base")
    sim, att = statistics.median(times["arca-sim"]), statistics.median(times["arca-sim+kbs"])
    create_runc, create_arca = (statistics.median(calls[k][0]) for k in ("runc", "arca"))
    start_runc, start_arca = (statistics.median(calls[k][1]) for k in ("runc", "arca"))
    runtime_extra = (create_arca - create_runc) + (start_arca - start_runc)
    print("breakdown (medians):")
    print(f"  runtime create   runc {create_runc * 1000:6.1f} ms   arca-runtime "
          f"{create_arca * 1000:6.1f} ms   (start: runc {med_ms(calls['runc'][1]).strip()}, "
          f"arca {med_ms(calls['arca'][1]).strip()})")
    print(f"  runtime extra (create + start): {runtime_extra * 1000:6.1f} ms")
    print(f"  agent start-up (no KBS): {(sim - base - runtime_extra) * 1000:6.1f} ms")
    total_rcar = sum(statistics.median(v) for v in rcar.values() if v)
    for kind, xs in rcar.items():
        print(f"  RCAR {kind:22s} {med_ms(xs)}  ({len(xs)} requests)")
    if verification is not None:
        print(f"  verification (KBS attest handler, mean): {verification * 1000:6.1f} ms")
    print(f"  attested extra: {(att - sim) * 1000:6.1f} ms; RCAR round trips (through the proxy, "
          f"overlapping the agent's own work: imports, key, JWE) {total_rcar * 1000:6.1f} ms")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
