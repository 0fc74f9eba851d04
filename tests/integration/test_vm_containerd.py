"""Issue 11 acceptance for the ``vm`` backend through real containerd: ``ctr run --runc-binary
arca-runtime --annotation io.arca.tee=vm`` runs a busybox image from a real registry in its own
QEMU micro-VM (TCG here), with a real ``arca kbs serve`` trusting this test's sim platform and
a release policy made by ``arca policy generate --tee vm``.

VM boots are the cost (seconds each under TCG on a loaded machine): one containerd, registry,
KBS and set of images for the module, and each test boots as few VMs as its claim needs. After
every container the host is checked for what it may leave: QEMU processes, sockets, disk images
other than the shared caches, mounts, cgroups, TD directories and platform registrations.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import pty
import select
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import pytest

from tests.support.containerd import (
    cgroups_named,
    containerd_available,
    mounts_mentioning,
    processes_of_container,
    run_containerd,
)
from tests.support.images import build_busybox_image, push
from tests.support.registry import registry_available, run_registry
from tests.support.vm import (
    ARCA,
    RUNTIME,
    open_rootfs_image,
    qemu_of,
    sockets_under,
    vm_images,
    vm_unavailable,
)

_WHY_NOT = vm_unavailable()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (containerd_available() and registry_available()),
                       reason="needs root, containerd, ctr and docker-registry"),
    pytest.mark.skipif(_WHY_NOT is not None, reason=f"this host cannot run a VM: {_WHY_NOT}"),
]

VM = ("--annotation", "io.arca.tee=vm")
RUN = uuid.uuid4().hex[:6]
SECRET = f"vm-secret-{uuid.uuid4().hex}"
APP_CMD = ["sh", "-c", "cat /run/arca/secrets/app.key; echo; cat /run/arca/evidence.json"]
#: Reads a file of the image's second layer: a flipped block of it must not be read back.
READ_CMD = ["sh", "-c", "cat /etc/app.conf"]
#: One VM boot under TCG with 8 engineers on 2 cores: generous, a wedged VM still fails.
BOOT = 240


def init_data(kbs_url: str) -> bytes:
    return (f'version = "0.1.0"\nalgorithm = "sha384"\n\n[data]\nkbs_url = "{kbs_url}"\n'
            "resources = '''\n[[resource]]\npath = \"default/key/app\"\nname = \"app.key\"\n"
            "'''\nagent = '''\nkbs_timeout = 20.0\nkbs_retries = 2\nkbs_backoff = 0.5\n'''\n"
            ).encode()


class World:
    def __init__(self, tmp: pathlib.Path, ctrd, images: dict[str, str], layout: pathlib.Path,
                 env: dict[str, str]) -> None:
        self.tmp, self.ctrd, self.images, self.layout, self.env = tmp, ctrd, images, layout, env
        self.arca_root = pathlib.Path(env["ARCA_ROOT"])
        self.arca_run = pathlib.Path(env["ARCA_RUN"])
        self.kbs_url = ""
        self.init = b""
        self.init_file = tmp / "init-data.toml"

    def cid(self, what: str) -> str:
        return f"vm{RUN}-{what}"

    def run(self, image: str, cid: str, *cmd: str, extra: tuple[str, ...] = (),
            runtime: str = RUNTIME, init: bytes | None = None, timeout: float = BOOT,
            detach: bool = False) -> subprocess.CompletedProcess[str]:
        ann = list(VM)
        if init is not None:
            ann += ["--annotation", f"io.arca.init-data={base64.b64encode(init).decode()}"]
        mode = "-d" if detach else "--rm"
        return self.ctrd.ctr("run", mode, "--net-host", *self.ctrd.run_args(runtime), *ann,
                             *extra, self.images[image], cid, *cmd, check=False,
                             timeout=timeout)

    def remove(self, cid: str) -> None:
        self.ctrd.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False)
        for _ in range(200):
            res = self.ctrd.ctr("tasks", "delete", cid, check=False)
            if res.returncode == 0 or "not found" in res.stderr:
                break
            time.sleep(0.1)
        self.ctrd.ctr("containers", "delete", cid, check=False)

    def arca(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([ARCA, *args], env=self.env, capture_output=True, text=True,
                             timeout=600)
        if check and res.returncode != 0:
            raise AssertionError(f"arca {' '.join(args)}: {res.returncode} {res.stderr}")
        return res

    def cache_images(self) -> list[str]:
        return vm_images(self.arca_root)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    from arca.host.simtee import client, locations
    from arca.kbs.admin_client import AdminClient
    from tests.support.kbs import admin_keypair, start_kbs

    tmp = tmp_path_factory.mktemp("vm-ctrd")
    short_run = tempfile.mkdtemp(prefix="avm-", dir="/tmp")  # unix socket paths stay short
    env_vars = {"ARCA_ROOT": str(tmp / "arca-root"), "ARCA_RUN": short_run}
    mp = pytest.MonkeyPatch()
    for k, v in env_vars.items():
        mp.setenv(k, v)
    layout = tmp / "layout"
    build_busybox_image(layout, "latest")
    build_busybox_image(layout, "app", files={"/etc/app.conf": b"mode=prod\n" * 2000},
                        cmd=APP_CMD)
    build_busybox_image(layout, "other", files={"/etc/other.conf": b"x\n"}, cmd=APP_CMD)
    client.ensure_running()  # the sim root the KBS is told to trust
    kbs_dir = tmp / "kbs"
    kbs_dir.mkdir()
    admin_key, admin_pub = admin_keypair(kbs_dir)
    kbs = start_kbs(kbs_dir, "--trust-sim-root", str(locations.root_cert_path()),
                    "--admin-public-key", str(admin_pub))
    try:
        with run_registry(tmp / "registry") as reg, \
                run_containerd(tmp / "ctrd", env=env_vars) as ctrd:
            images = {}
            for tag in ("latest", "app", "other"):
                images[tag] = push(f"{layout}:{tag}", reg.host, f"vm{RUN}:{tag}")
                ctrd.pull_plain_http(images[tag])
            w = World(tmp, ctrd, images, layout, {**os.environ, **env_vars})
            w.kbs_url = kbs.url
            w.init = init_data(kbs.url)
            w.init_file.write_bytes(w.init)
            admin = AdminClient(kbs.url, admin_key)
            admin.set_resource("default/key/app", SECRET.encode())
            out = tmp / "policy"
            gen = json.loads(w.arca("policy", "generate", f"oci:{layout}:app", "--tee", "vm",
                                    "--init-data", str(w.init_file), "--out-dir", str(out),
                                    "--json").stdout)
            w.arca("kbs", "admin", "--url", kbs.url, "--admin-key", str(kbs_dir / "admin.key"),
                   "set-resource-policy", "--file", str(out / "resource-policy.rego"))
            for name, values in gen["reference_values"].items():
                admin.set_reference_value(name, values)
            w.policy = gen  # type: ignore[attr-defined]
            yield w
            admin.close()
    finally:
        kbs.kill()
        client.stop()
        mp.undo()
        shutil.rmtree(short_run, ignore_errors=True)


def assert_nothing_left(w: World, cid: str, *, images_before: list[str] | None = None) -> None:
    from arca.host.simtee import client, locations

    deadline = time.monotonic() + 20
    while True:
        leftovers = {
            "qemu": qemu_of(cid),
            "processes": processes_of_container(w.ctrd, cid),
            "mounts": mounts_mentioning(f"/{cid}/") + mounts_mentioning(f"/{cid} "),
            "cgroups": cgroups_named(cid),
            "sockets": [s for s in sockets_under(w.arca_run) if cid in s],
            "td_dir": [str(locations.device_dir(cid))] if locations.device_dir(cid).exists()
            else [],
            "state": [cid] if (w.arca_run / "containers" / cid).exists() else [],
            "registrations": [t["td_id"] for t in client.list_tds() if t["td_id"] == cid]
            if client.is_running() else [],
            "records": [p.name for p in locations.registrations_dir().glob(f"{cid}.json")],
            "ctr": [c for c in w.ctrd.ctr("containers", "ls", "-q").stdout.split() if c == cid],
            "images": [] if images_before is None else
            sorted(set(w.cache_images()) - set(images_before)),
        }
        if not any(leftovers.values()):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"container {cid} left: {leftovers}")
        time.sleep(0.2)


def out(res: subprocess.CompletedProcess[str]) -> str:
    return res.stdout.replace("\r", "")


# -- process semantics --------------------------------------------------------------------------


def test_output_stderr_and_exit_code_come_back(world: World) -> None:
    cid = world.cid("exit")
    res = world.run("latest", cid, "sh", "-c",
                    "echo out-$((3*4)); echo to-stderr >&2; uname -r; exit 7")
    assert res.returncode == 7, res.stderr
    lines = out(res).splitlines()
    assert lines[0] == "out-12", res.stdout
    # the workload ran on the guest kernel, not the host's
    assert lines[1] != os.uname().release, lines
    assert "to-stderr" in res.stderr
    assert_nothing_left(world, cid)
