"""``arca demo``: the whole story on one machine, from nothing, in about a minute.

It builds a small busybox image whose workload prints a secret, starts an embedded key broker
(SQLite, loopback, the local sim root trusted), generates the resource policy from the image's
predicted measurement (``arca measure``), uploads a secret, runs the container in a ``sim``
trust domain and shows the secret delivered after attestation; then runs a one-byte-tampered
copy of the image and shows the broker refuse it. Every step goes through the real ``arca``
command line, so what the demo prints is what a user would type. It exits non-zero as soon as
a step does not behave as described, and cleans up what it created.

The demo spans the zones (host tools, broker, policy), so it lives outside them and talks to
each through its command line only.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.panel import Panel

from arca._internal.net import ServerDidNotStart, wait_until_serving
from arca.wire.errors import ArcaError, ConfigError

SECRET = "the launch code is 0000 (delivered only to a measured TD)"  # noqa: S105 - demo data
RESOURCE = "default/demo/greeting"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
APPLETS = ("sh", "cat", "echo", "ls", "id", "sleep")

WORKLOAD = """#!/bin/sh
echo "workload: hello from inside trust domain $(hostname 2>/dev/null || echo)"
echo "workload: my secret is: $(cat /run/arca/secrets/greeting)"
"""


class DemoFailed(ArcaError):
    """A demo step did not behave as described."""


# --- the demo image, written as an OCI layout without external tools ----------------------


def _tar_layer(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            info.mtime = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _dir(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, None


def _file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def _link(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
    return info, None


def _busybox() -> bytes:
    for path in BUSYBOX_CANDIDATES:
        if os.path.exists(path):
            return pathlib.Path(path).read_bytes()
    raise ConfigError("busybox not found (install Debian's busybox-static: make setup)")


def build_demo_layout(layout: pathlib.Path, tag: str, workload: str) -> None:
    """Write (or extend) an OCI image layout with a two-layer busybox image under ``tag``."""
    base: list[tuple[tarfile.TarInfo, bytes | None]] = [
        _dir("bin"), _dir("etc"), _dir("app"), _dir("tmp", 0o1777), _dir("proc"), _dir("sys"),
        _dir("dev"), _dir("run")]
    base.append(_file("bin/busybox", _busybox(), 0o755))
    base += [_link(f"bin/{a}", "busybox") for a in APPLETS]
    base.append(_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"))
    base.append(_file("etc/group", b"root:x:0:\n"))
    layers = [_tar_layer(base), _tar_layer([_file("app/show-secret.sh", workload.encode(), 0o755)])]

    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}"

    layer_descs, diff_ids = [], []
    for raw in layers:
        gz = gzip.compress(raw, mtime=0)
        layer_descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            "digest": put(gz), "size": len(gz)})
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/app/show-secret.sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put(config), "size": len(config)},
        "layers": layer_descs,
    }, sort_keys=True).encode()
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index_path = layout / "index.json"
    index: dict[str, Any] = (json.loads(index_path.read_text()) if index_path.exists()
                             else {"schemaVersion": 2, "manifests": []})
    index["manifests"] = [m for m in index["manifests"]
                          if m.get("annotations", {}).get("org.opencontainers.image.ref.name")
                          != tag]
    index["manifests"].append({
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest),
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": tag}})
    index_path.write_text(json.dumps(index))


# --- running steps -----------------------------------------------------------------------


class Demo:
    def __init__(self, console: Console, workdir: pathlib.Path) -> None:
        self.console = console
        self.work = workdir
        self.step_no = 0
        self.arca = [sys.executable, "-m", "arca.cli.main"]

    def step(self, title: str, why: str) -> None:
        self.step_no += 1
        self.console.print()
        self.console.print(f"[bold cyan]Step {self.step_no}. {title}[/]")
        self.console.print(f"[dim]{why}[/]")

    def run(self, *args: str, expect_ok: bool = True, show: bool = True,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
        shown = "arca " + " ".join(args)
        if show:
            self.console.print(f"  [green]$[/] {shown}", highlight=False, soft_wrap=True)
        res = subprocess.run([*self.arca, *args], capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
        if expect_ok and res.returncode != 0:
            raise DemoFailed(f"'{shown}' failed (exit {res.returncode}): "
                             f"{(res.stderr or res.stdout).strip()[-800:]}")
        return res

    def show_output(self, text: str, style: str = "") -> None:
        for line in text.rstrip().splitlines():
            self.console.print(f"    {line}", style=style, highlight=False, markup=False,
                               soft_wrap=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _kbs(demo: Demo, admin_pub: pathlib.Path, sim_root: pathlib.Path) -> Iterator[str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["kbs", "serve", "--listen", f"127.0.0.1:{port}", "--insecure-http",
            "--data-dir", str(demo.work / "kbs"), "--admin-public-key", str(admin_pub),
            "--trust-sim-root", str(sim_root)]
    demo.console.print(f"  [green]$[/] arca {' '.join(args)} &", highlight=False, soft_wrap=True)
    log = open(demo.work / "kbs.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([*demo.arca, *args], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        try:
            wait_until_serving(proc, "127.0.0.1", port, what="the key broker", timeout=30,
                               log=demo.work / "kbs.log", interval=0.1)
        except ServerDidNotStart as e:
            raise DemoFailed(str(e)) from None
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def vm_unavailable() -> str | None:
    """Why this machine cannot run the ``vm`` act (``None``: it can)."""
    from arca.host import backends

    try:
        backends.get("vm").check_host()
    except ArcaError as e:
        return str(e)
    return None


def run_demo(console: Console | None = None, keep: bool = False,
             tees: tuple[str, ...] = ("sim", "vm")) -> None:
    console = console or Console()
    for tee in tees:
        if tee not in ("sim", "vm"):
            raise ConfigError(f"arca demo: no story for tee {tee!r} (sim, vm)")
    console.print(Panel.fit(
        "[bold]Arca demo[/]: a secret reaches a container only after its own trust domain\n"
        "proves what it runs. Backend: [bold]sim[/] (simulated TEE: isolates TDs from each\n"
        "other, [italic]not[/] from this host; use TDX/SNP/SGX for real protection);\n"
        "then [bold]vm[/] (the same story in a QEMU micro-VM) where this machine can run it.",
        border_style="cyan"))
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="arca-demo-"))
    demo = Demo(console, workdir)
    images = ("arca-demo:v1", "arca-demo:tampered")
    # The sim platform plays hardware and may serve other containers: stop it at the end only
    # if the demo is what started it.
    sim_was_running = demo.run("simtee", "status", expect_ok=False, show=False).returncode == 0
    try:
        demo.step("Build the demo image",
                  "A busybox image whose workload prints /run/arca/secrets/greeting.")
        layout = workdir / "layout"
        build_demo_layout(layout, "v1", WORKLOAD)
        tampered = WORKLOAD.replace("my secret is", "my secret IS")  # one byte differs
        build_demo_layout(layout, "tampered", tampered)
        demo.run("image", "load", str(layout), "--tag", "v1", "--name", images[0])
        demo.run("image", "load", str(layout), "--tag", "tampered", "--name", images[1])

        demo.step("Start the simulated TEE platform and the key broker",
                  "The broker trusts the local sim root; it releases nothing by default.")
        demo.run("simtee", "start")
        sim_root = workdir / "sim-root.pem"
        sim_root.write_text(demo.run("simtee", "root-cert", show=False).stdout)
        keys = workdir / "admin"
        keys.mkdir()
        demo.run("kbs", "keygen", "--out", str(keys / "admin"))
        with _kbs(demo, keys / "admin.pub", sim_root) as url:
            admin = ["kbs", "admin", "--url", url, "--admin-key", str(keys / "admin.key")]

            init_data = workdir / "init-data.toml"
            init_data.write_text(
                'version = "0.1.0"\nalgorithm = "sha384"\n\n[data]\n'
                f'kbs_url = "{url}"\n'
                "resources = '''\n[[resource]]\n"
                f'path = "{RESOURCE}"\nname = "greeting"\n'
                "'''\n"
                "agent = 'insecure_kbs = true'  # the demo's broker is plain HTTP on loopback\n")

            for tee in tees:
                if tee == "vm":
                    why = vm_unavailable()
                    if why is not None:
                        demo.step("The same story in a VM (vm backend): skipped",
                                  f"This machine cannot run it: {why}")
                        continue
                    demo.step("The same story in a VM (vm backend)",
                              "Now the workload runs in its own QEMU micro-VM: the kernel, the "
                              "initramfs with the agent and the dm-verity root hash of the "
                              "image are measured; the sim platform plays the VM's security "
                              "processor. Under TCG a VM takes some seconds to boot.")
                _act(demo, tee, images, init_data, admin)
    finally:
        demo.step("Clean up", "Remove the demo images and the broker's data"
                  + ("." if sim_was_running else "; stop the sim platform the demo started."))
        demo.run("image", "rm", *images, expect_ok=False)
        if not sim_was_running:
            demo.run("simtee", "stop", expect_ok=False)
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    console.print()
    console.print("[bold green]Demo complete: every step behaved as described.[/]")


def _act(demo: Demo, tee: str, images: tuple[str, str], init_data: pathlib.Path,
         admin: list[str]) -> None:
    """Predict, generate the policy, run the image (secret delivered), run the tampered copy
    (refused), for one backend."""
    console, workdir = demo.console, demo.work
    demo.step("Predict the measurement from the image alone",
              "The tenant computes what a correct TD will measure before anything runs.")
    measured = json.loads(demo.run("measure", images[0], "--tee", tee,
                                   "--init-data", str(init_data), "--json").stdout)
    demo.show_output(f"measurement: {measured['measurement']}")

    demo.step("Generate the policy and upload the secret",
              "The resource policy releases the secret to exactly that measurement.")
    policy_dir = workdir / f"policy-{tee}"
    demo.run("policy", "generate", images[0], "--tee", tee, "--init-data",
             str(init_data), "--resource", RESOURCE, "--out-dir", str(policy_dir))
    demo.run(*admin, "set-resource-policy", "--file",
             str(policy_dir / "resource-policy.rego"))
    refs = json.loads((policy_dir / "reference-values.json").read_text())
    for name, values in refs.items():
        demo.run(*admin, "set-reference-value", name, *values)
    secret_file = workdir / "secret.txt"
    secret_file.write_text(SECRET)
    demo.run(*admin, "set-resource", RESOURCE, "--file", str(secret_file))
    secret_file.unlink()

    demo.step(f"Run the container in its own {tee} trust domain",
              "The agent attests to the broker with fresh evidence, receives the secret "
              "into a tmpfs inside the TD, then execs the workload.")
    res = demo.run("run", "--rm", "--tee", tee, "--init-data", str(init_data),
                   images[0], expect_ok=False)
    demo.show_output(res.stdout + res.stderr)
    if res.returncode != 0 or SECRET not in res.stdout:
        raise DemoFailed(f"the measured container did not receive its secret "
                         f"(exit {res.returncode})")
    console.print("  [bold green]✔ secret delivered after attestation[/]")

    demo.step("Run a tampered copy of the image",
              "One byte of the workload script differs: the rootfs digest, and so the "
              "measurement, change; the broker must refuse.")
    res = demo.run("run", "--rm", "--tee", tee, "--init-data", str(init_data),
                   images[1], expect_ok=False)
    demo.show_output(res.stdout + res.stderr, style="yellow")
    if res.returncode == 0 or SECRET in res.stdout + res.stderr:
        raise DemoFailed("the tampered container was not refused")
    console.print("  [bold green]✔ tampered image refused, secret not released[/]")
