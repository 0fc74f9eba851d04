"""``arca`` against ``podman`` on the same images, interleaved run by run, medians (issue 15).

1. ``arca run --rm --tee none IMG true`` vs ``podman run --rm IMG true`` (goal ≤ 0.5×).
2. ``arca run --rm --tee sim`` with init-data naming a KBS and one secret, the workload reading
   it, vs ``podman run --rm IMG true`` (goal ≤ 0.8×).
3. Start-up of the commands typed often: ``arca ps``, ``images``, ``logs``, ``inspect``,
   ``version``, ``kbs admin get-reference-values`` (goal ≤ 80 ms each), beside ``podman images``.
4. ``arca run -it`` vs ``arca run -i -t`` (same work: goal ratio ≈ 1).
5. Pull of a ~100 MB, 5-layer image from a local registry into an empty store: ``arca pull``
   vs ``podman pull`` (goal: at least as fast, ratio ≤ 1).

podman runs with private storage (``--root``/``--runroot`` in a temp dir) and ``--network
host`` (what an ``arca`` container gets today, so both do the same work; ``--net-default``
measures podman's default network too). Needs root, podman (``make bench`` installs it),
docker-registry, skopeo, umoci, runc. Usage: ``python bench/cli/run.py [--runs N]``. Not a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from tests.support.images import build_busybox_image, push  # noqa: E402
from tests.support.imagetrees import push_raw  # noqa: E402
from tests.support.registry import free_port, run_registry  # noqa: E402

BIN = pathlib.Path(sys.executable).parent
ARCA = str(BIN / "arca")
#: podman's default rlimits (nofile 1048576, nproc 32768) exceed what a sandboxed host may
#: grant; an arca container gets NOFILE 1024 and the host's NPROC
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def _big_image() -> object:
    spec = importlib.util.spec_from_file_location("bench_images", REPO / "bench/images/run.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def timed(cmd: list[str], env: dict[str, str], *, stdin: int | None = subprocess.DEVNULL
          ) -> float:
    t = time.perf_counter()
    res = subprocess.run(cmd, env=env, stdin=stdin, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}): "
                         f"{res.stderr.decode(errors='replace')[-500:]}")
    return dt


def interleaved(variants: dict[str, tuple[list[str], dict[str, str]]], runs: int,
                warmup: int = 2) -> dict[str, float]:
    for _ in range(warmup):
        for cmd, env in variants.values():
            timed(cmd, env)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(runs):
        for k, (cmd, env) in variants.items():
            times[k].append(timed(cmd, env))
    return {k: statistics.median(v) for k, v in times.items()}


def ms(x: float) -> str:
    return f"{x * 1000:.0f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "15")))
    ap.add_argument("--pull-runs", type=int, default=3)
    ap.add_argument("--pull-only", action="store_true", help="only the pull comparison")
    ap.add_argument("--net-default", action="store_true",
                    help="also podman run with its default network")
    opts = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("podman"):
        print("bench/cli needs root and podman (make bench installs it)", file=sys.stderr)
        return 1
    # byte-compiled as scripts/setup.sh leaves an install (PYTHONDONTWRITEBYTECODE would
    # otherwise have every command compile the sources changed since)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "src")],
                   capture_output=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="arca-bench-cli-"))
    run_dir = tempfile.mkdtemp(prefix="abc-", dir="/tmp")
    env = {**os.environ, "ARCA_ROOT": str(tmp / "arca"), "ARCA_RUN": run_dir}
    pod = ["podman", "--root", str(tmp / "podman-root"), "--runroot", str(tmp / "podman-run"),
           "--storage-driver", "overlay"]
    kbs = None
    try:
        with run_registry(tmp / "registry") as reg:
            if opts.pull_only:
                _pull(opts, tmp, env, reg.host)
            else:
                kbs = _run(opts, tmp, env, pod, reg.host)
    finally:
        if kbs is not None:
            kbs.kill()
            kbs.wait()
        subprocess.run([ARCA, "simtee", "stop"], env=env, capture_output=True)
        for c in subprocess.run([ARCA, "ps", "-a", "-q"], env=env, capture_output=True,
                                text=True).stdout.split():
            subprocess.run([ARCA, "rm", "-f", c], env=env, capture_output=True)
        subprocess.run([*pod, "system", "reset", "--force"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


def _run(opts: argparse.Namespace, tmp: pathlib.Path, env: dict[str, str], pod: list[str],
         registry: str) -> subprocess.Popen[bytes]:
    layout = build_busybox_image(tmp / "layout", "v1", cmd=["cat", "/run/arca/secrets/key"])
    ref = push(layout, registry, "bench/app:v1")
    subprocess.run([ARCA, "pull", "-q", "--insecure", ref], env=env, check=True,
                   capture_output=True)
    subprocess.run([*pod, "pull", "-q", "--tls-verify=false", ref], check=True,
                   capture_output=True)

    # a KBS with one secret released to the image's measurement
    port = free_port()
    work = tmp / "kbs"
    work.mkdir()
    init = work / "init-data.toml"
    init.write_text(f'version = "0.1.0"\nalgorithm = "sha384"\n\n[data]\n'
                    f'kbs_url = "http://127.0.0.1:{port}"\nresources = \'\'\'\n[[resource]]\n'
                    'path = "default/app/key"\nname = "key"\n\'\'\'\n'
                    # the bench's KBS is plain HTTP on loopback, as the agent must be told
                    "agent = '''\ninsecure_kbs = true\n'''\n")
    (work / "key.bin").write_text("s3cret\n")

    def arca(*args: str) -> None:
        subprocess.run([ARCA, *args], env=env, cwd=work, check=True, capture_output=True)

    arca("policy", "generate", ref, "--tee", "sim", "--init-data", str(init), "--out-dir", "p")
    arca("kbs", "keygen", "--out", "admin")
    root = subprocess.run([ARCA, "simtee", "root-cert", "--path"], env=env, check=True,
                          capture_output=True, text=True).stdout.strip()
    kbs = subprocess.Popen([ARCA, "kbs", "serve", "--listen", f"127.0.0.1:{port}",
                            "--insecure-http", "--data-dir", str(work / "data"),
                            "--admin-public-key", "admin.pub", "--trust-sim-root", root],
                           env=env, cwd=work, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    from arca._internal.net import wait_until_serving

    wait_until_serving(kbs, "127.0.0.1", port, what="kbs", timeout=60)
    admin_env = {**env, "ARCA_KBS_URL": f"http://127.0.0.1:{port}",
                 "ARCA_KBS_ADMIN_KEY": str(work / "admin.key")}
    for args in (["set-resource-policy", "--file", "p/resource-policy.rego"],
                 ["set-reference-values", "--file", "p/reference-values.json"],
                 ["set-resource", "default/app/key", "--file", "key.bin"]):
        subprocess.run([ARCA, "kbs", "admin", *args], env=admin_env, cwd=work, check=True,
                       capture_output=True)
    out = subprocess.run([ARCA, "run", "--rm", "--tee", "sim", "--init-data", str(init), ref],
                         env=env, capture_output=True, text=True)
    assert out.stdout == "s3cret\n", out.stderr  # the secret arrives: the KBS path is real

    podman_run = [*pod, "run", "--rm", "--network", "host", *ULIMITS, ref, "true"]
    variants = {
        "podman run --rm (host net)": (podman_run, env),
        "arca run --rm --tee none": ([ARCA, "run", "--rm", "--tee", "none", ref, "true"], env),
        "arca run --rm --tee sim + KBS + 1 secret":
            ([ARCA, "run", "--rm", "--tee", "sim", "--init-data", str(init), ref], env),
    }
    if opts.net_default:
        variants["podman run --rm (default net)"] = (
            [*pod, "run", "--rm", *ULIMITS, ref, "true"], env)
    med = interleaved(variants, opts.runs)
    base = med["podman run --rm (host net)"]
    print(f"== run to exit, medians of {opts.runs} interleaved runs")
    for k, v in med.items():
        print(f"  {k:<42} {ms(v):>8}   {v / base:.2f}x podman")

    # start-up of everyday commands
    subprocess.run([ARCA, "run", "-d", "--name", "bench-web", "--tee", "none", ref, "sleep",
                    "600"], env=env, check=True, capture_output=True)
    everyday = {
        "podman images": ([*pod, "images"], env),
        "podman ps": ([*pod, "ps"], env),
        "arca ps": ([ARCA, "ps"], env),
        "arca images": ([ARCA, "images"], env),
        "arca logs": ([ARCA, "logs", "bench-web"], env),
        "arca inspect": ([ARCA, "inspect", "bench-web"], env),
        "arca version": ([ARCA, "version"], env),
        "arca kbs admin get-reference-values": ([ARCA, "kbs", "admin", "get-reference-values"],
                                                admin_env),
    }
    med = interleaved(everyday, opts.runs)
    print(f"== command start-up, medians of {opts.runs} (goal ≤ 80 ms)")
    for k, v in med.items():
        print(f"  {k:<42} {ms(v):>8}   {v / med['podman images']:.2f}x podman images"
              + ("" if k.startswith("podman") else "   " + ("met" if v <= 0.08 else "missed")))

    # -it vs -i -t
    med = interleaved({
        "arca run --rm -i -t": ([ARCA, "run", "--rm", "-i", "-t", "--tee", "none", ref, "true"],
                                env),
        "arca run --rm -it": ([ARCA, "run", "--rm", "-it", "--tee", "none", ref, "true"], env),
    }, opts.runs)
    print(f"== -it vs -i -t (stdin /dev/null), medians of {opts.runs}")
    for k, v in med.items():
        print(f"  {k:<42} {ms(v):>8}")
    print(f"  ratio -it / -i -t: {med['arca run --rm -it'] / med['arca run --rm -i -t']:.2f}")

    _pull(opts, tmp, env, registry)
    return kbs


def _pull(opts: argparse.Namespace, tmp: pathlib.Path, env: dict[str, str],
          registry: str) -> None:
    """Pull of a ~100 MB multi-layer image into an empty store, arca and podman in turn."""
    big = _big_image()
    manifest, blobs, raw_size = big.make_image(tmp / "big")  # type: ignore[attr-defined]
    push_raw(f"http://{registry}", "bench/big", "v1", tmp, manifest,
             "application/vnd.oci.image.manifest.v1+json", blobs)
    big_ref = f"{registry}/bench/big:v1"
    mb = raw_size / 1e6
    a_t, p_t, a_cpu, p_cpu = [], [], [], []

    def children_cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    for i in range(opts.pull_runs):
        penv = {**env, "ARCA_ROOT": str(tmp / f"pull-{i}")}
        c0 = children_cpu()
        a_t.append(timed([ARCA, "pull", "-q", "--insecure", big_ref], penv))
        a_cpu.append(children_cpu() - c0)
        shutil.rmtree(tmp / f"pull-{i}", ignore_errors=True)
        proot = ["podman", "--root", str(tmp / f"ppull-{i}"), "--runroot",
                 str(tmp / f"ppull-run-{i}"), "--storage-driver", "overlay"]
        c0 = children_cpu()
        p_t.append(timed([*proot, "pull", "-q", "--tls-verify=false", big_ref], env))
        p_cpu.append(children_cpu() - c0)
        subprocess.run([*proot, "system", "reset", "--force"], capture_output=True)
        shutil.rmtree(tmp / f"ppull-{i}", ignore_errors=True)
    a, p = statistics.median(a_t), statistics.median(p_t)
    print(f"== pull of {mb:.0f} MB / {len(blobs) - 1} layers, medians of {opts.pull_runs}")
    print(f"  arca pull   {a:.2f} s ({mb / a:.0f} MB/s)\n  podman pull {p:.2f} s "
          f"({mb / p:.0f} MB/s)\n  ratio arca/podman {a / p:.2f} (goal ≤ 1)")
    cpu = statistics.median(a_cpu), statistics.median(p_cpu)
    print(f"  CPU (user+sys of the command and its children): arca {cpu[0]:.2f} s, podman "
          f"{cpu[1]:.2f} s, ratio {cpu[0] / cpu[1]:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
