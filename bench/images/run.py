"""Image store and ``arca run`` benchmark (issue 6).

1. Pull + unpack throughput of a ~100 MB, 4-layer image of random content from a local
   docker-registry: ``arca image pull`` (in-process API) versus ``skopeo copy`` + ``umoci
   unpack`` measured in the same run.
2. Start time of the 1st container of that image (pull + unpack + rootfs hash + start, from
   an empty store) versus the 10th: ``arca run -d --tee sim`` until it returns, i.e. the
   container runs in its TD; checks the 2nd-10th did not download, unpack or hash again
   (blobs, layer directories and digest-cache entries keep inode and mtime; goal >= 10x).
3. ``arca run --rm --tee sim`` and ``--tee none`` versus ``runc run`` on the same image rootfs
   and spec (goal: <= 1.3x), interleaved run by run; wall time and CPU time (user+sys of the
   command and the children it waited for). ``bench/images/phases.py`` splits one run into
   its phases.

Prints medians; needs root, docker-registry, skopeo, umoci, runc. Usage: python bench/images/run.py
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.support.imagetrees import push_raw  # noqa: E402
from tests.support.registry import run_registry  # noqa: E402

BIN = pathlib.Path(sys.executable).parent
LAYERS = 4
FILES_PER_LAYER = 25
FILE_SIZE = 1 << 20  # 4 x 25 x 1 MiB = 100 MiB
REPEAT = 3
RUNS = 10


def make_image(layout: pathlib.Path) -> tuple[bytes, list[bytes], int]:
    """(manifest, [config, *layers], uncompressed bytes) of a random-content image."""
    import hashlib

    tars = []
    for i in range(LAYERS):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            d = tarfile.TarInfo(f"data{i}")
            d.type, d.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(d)
            for j in range(FILES_PER_LAYER):
                ti = tarfile.TarInfo(f"data{i}/f{j}")
                ti.size, ti.mode = FILE_SIZE, 0o644
                tf.addfile(ti, io.BytesIO(os.urandom(FILE_SIZE)))
        tars.append(buf.getvalue())
    # busybox as the top layer so containers have something to run
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.add("/bin/busybox", arcname="bin/busybox")
        for applet in ("true", "sh", "sleep"):
            ti = tarfile.TarInfo(f"bin/{applet}")
            ti.type, ti.linkname = tarfile.SYMTYPE, "busybox"
            tf.addfile(ti)
    tars.append(buf.getvalue())
    blobs = [gzip.compress(t, compresslevel=1, mtime=0) for t in tars]

    def desc(mt: str, b: bytes) -> dict[str, object]:
        return {"mediaType": mt, "digest": "sha256:" + hashlib.sha256(b).hexdigest(),
                "size": len(b)}

    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["/bin/true"], "Env": ["PATH=/bin"]},
                         "rootfs": {"type": "layers", "diff_ids": [
                             "sha256:" + hashlib.sha256(t).hexdigest() for t in tars]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc("application/vnd.oci.image.config.v1+json", config),
        "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", b) for b in blobs],
    }).encode()
    del layout
    return manifest, [config, *blobs], sum(len(t) for t in tars)


def _state(store: pathlib.Path, cache: pathlib.Path) -> list[tuple[str, int, int]]:
    """(path, inode, mtime) of every blob, layer directory and digest-cache entry: a
    re-download, re-unpack or re-hash would replace one of them."""
    out = []
    for d in (store / "blobs" / "sha256", store / "layers", cache):
        for name in sorted(os.listdir(d)):
            st = os.stat(d / name)
            out.append((str(d / name), st.st_ino, st.st_mtime_ns))
    return out


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    s = time.perf_counter()
    fn()
    return time.perf_counter() - s


def measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of it and its waited-for descendants); raises on failure."""
    s = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - s
    assert p.stderr is not None
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if status:
        raise RuntimeError(f"{' '.join(cmd)}: {status}: {err.strip()[-500:]}")
    return wall, ru.ru_utime + ru.ru_stime


def sh(*cmd: str, env: dict[str, str] | None = None) -> None:
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {res.returncode}: {res.stderr.strip()[-500:]}")


def main() -> int:
    import logging

    logging.disable(logging.WARNING)  # the --insecure warning, once per pull
    if os.geteuid() != 0:
        print("bench/images: needs root")
        return 1
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="arca-bench-img-"))
    try:
        return _main(tmp)
    finally:
        subprocess.run(["umount", "-R", str(tmp / "runc-bundle" / "rootfs")],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def _main(tmp: pathlib.Path) -> int:
    manifest, blobs, raw_size = make_image(tmp / "layout")
    mb = raw_size / 1e6
    with run_registry(tmp / "registry") as reg:
        push_raw(reg.url, "bench/big", "v1", tmp, manifest,
                 "application/vnd.oci.image.manifest.v1+json", blobs)
        ref = f"{reg.host}/bench/big:v1"
        print(f"image: {LAYERS + 1} layers, {mb:.0f} MB uncompressed, "
              f"{sum(len(b) for b in blobs[1:]) / 1e6:.0f} MB compressed")

        # 1. pull + unpack throughput ----------------------------------------------------------
        from arca.host.images import ImageStore, pull

        arca_t, base_t = [], []
        for i in range(REPEAT):
            root = tmp / f"pull{i}"
            os.environ["ARCA_ROOT"] = str(root)
            arca_t.append(timed(lambda: pull(ImageStore(), ref, insecure=True)))
            shutil.rmtree(root)
            lay = tmp / f"skopeo{i}"
            base_t.append(timed(lambda lay=lay: (
                sh("skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
                   f"oci:{lay}:v1"),
                sh("umoci", "unpack", "--image", f"{lay}:v1", str(lay) + "-bundle"))))
            shutil.rmtree(lay)
            shutil.rmtree(str(lay) + "-bundle")
        a, b = statistics.median(arca_t), statistics.median(base_t)
        print(f"pull+unpack: arca {a:.2f}s ({mb / a:.0f} MB/s)  skopeo+umoci {b:.2f}s "
              f"({mb / b:.0f} MB/s)  ratio arca/baseline {a / b:.2f}")

        # 2. 1st versus 10th container ------------------------------------------------------------
        short_run = tempfile.mkdtemp(prefix="abr-", dir="/tmp")
        env = {**os.environ, "ARCA_ROOT": str(tmp / "runs"), "ARCA_RUN": short_run}
        arca = str(BIN / "arca")
        try:
            # The guest runtime is built once per host, not per image: not part of "1st".
            sh(sys.executable, "-c", "from arca.host.guestruntime import ensure_guest_runtime;"
               "ensure_guest_runtime()", env=env)
            sh(sys.executable, "-c", "from arca.host.simtee import client; "
               "client.ensure_running()", env=env)
            # "start" = until `arca run -d` returns, i.e. the container runs in its TD
            start = [arca, "run", "-d", "--tee", "sim", ref, "sleep", "60"]
            first = timed(lambda: (sh(arca, "image", "pull", "-q", "--insecure", ref, env=env),
                                   sh(*start, env=env)))
            store = tmp / "runs" / "images"
            cache = tmp / "runs" / "cache" / "rootfs"
            snapshot = _state(store, cache)
            later = [timed(lambda: sh(*start, env=env)) for _ in range(RUNS - 1)]
            after = _state(store, cache)
            assert after == snapshot, "later containers changed the store or the digest cache"
            ids = json.loads(subprocess.run([arca, "ps", "--json"], env=env, capture_output=True,
                                            text=True).stdout)
            assert len(ids) == RUNS, f"expected {RUNS} running containers, got {len(ids)}"
            sh(arca, "rm", "-f", *(c["id"] for c in ids), env=env)
            tenth = later[-1]
            print(f"container start (run -d until running): 1st {first:.2f}s "
                  f"(pull+unpack+hash+start), 10th {tenth:.2f}s (median 2nd-10th "
                  f"{statistics.median(later):.2f}s), ratio {first / tenth:.1f}x (goal >= 10x); "
                  "10th re-downloaded/unpacked/hashed nothing: ok")

            # 3. arca run --tee sim versus runc run on the same bundle ---------------------------
            from arca.host.containers.spec import build_spec
            from arca.host.imageconfig import ProcessConfig
            from arca.host.images.mount import mount_overlay, umount

            os.environ["ARCA_ROOT"] = str(tmp / "runs")
            st = ImageStore()
            rec = st.get(ref)
            bundle = tmp / "runc-bundle"
            bundle.mkdir()
            mount_overlay(bundle / "rootfs", st.lowerdirs(rec), tmp / "rb-up", tmp / "rb-work")
            try:
                proc = ProcessConfig(("/bin/true",), ("PATH=/bin",), "/", 0, 0)
                spec = build_spec(proc, container_id="bench", hostname="bench", tee="none")
                (bundle / "config.json").write_text(json.dumps(spec))
                runc_root = tmp / "runc-root"
                # Interleaved, so load from other work on the machine hits all three alike;
                # CPU = user+sys of the command and every child it waited for (wait4).
                # "none"/"sim": the default private network (pasta); "…-host": --network host
                # (what every run had before issue 13 item 14), to show the network's cost.
                runs: dict[str, list[tuple[float, float]]] = {
                    "runc": [], "none": [], "sim": [], "none-host": [], "sim-host": []}
                for i in range(RUNS):
                    runs["runc"].append(measured(["runc", "--root", str(runc_root), "run", "-b",
                                                  str(bundle), f"bench-{i}"]))
                    for tee in ("none", "sim"):
                        runs[tee].append(measured([arca, "run", "--rm", "--tee", tee, ref],
                                                  env=env))
                        runs[f"{tee}-host"].append(measured(
                            [arca, "run", "--rm", "--tee", tee, "--network", "host", ref],
                            env=env))
            finally:
                umount(bundle / "rootfs")
            wall = {k: statistics.median(w for w, _c in v) for k, v in runs.items()}
            cpu = {k: statistics.median(c for _w, c in v) for k, v in runs.items()}
            r = wall["runc"]
            print(f"run (median of {RUNS}, interleaved; wall / CPU): runc run "
                  f"{r * 1000:.0f}ms / {cpu['runc'] * 1000:.0f}ms  arca run --tee sim "
                  f"{wall['sim'] * 1000:.0f}ms / {cpu['sim'] * 1000:.0f}ms (ratio "
                  f"{wall['sim'] / r:.2f}x, goal <= 1.3x)  arca run --tee none "
                  f"{wall['none'] * 1000:.0f}ms / {cpu['none'] * 1000:.0f}ms (ratio "
                  f"{wall['none'] / r:.2f}x)")
            print("  with --network host (no network namespace, no pasta): --tee sim "
                  f"{wall['sim-host'] * 1000:.0f}ms / {cpu['sim-host'] * 1000:.0f}ms (ratio "
                  f"{wall['sim-host'] / r:.2f}x)  --tee none {wall['none-host'] * 1000:.0f}ms / "
                  f"{cpu['none-host'] * 1000:.0f}ms (ratio {wall['none-host'] / r:.2f}x); the "
                  f"private network costs sim +{(wall['sim'] - wall['sim-host']) * 1000:.0f}ms, "
                  f"none +{(wall['none'] - wall['none-host']) * 1000:.0f}ms")
        finally:
            subprocess.run([sys.executable, "-c", "from arca.host.simtee import client; "
                            "client.stop()"], env=env, capture_output=True)
            shutil.rmtree(short_run, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
