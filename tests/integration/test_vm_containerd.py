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
    launch_editing_runc,
    needs_vm,
    open_rootfs_image,
    qemu_of,
    sockets_under,
    vm_images,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (containerd_available() and registry_available()),
                       reason="needs root, containerd, ctr and docker-registry"),
    needs_vm(),
]

VM = ("--annotation", "io.arca.tee=vm")
RUN = uuid.uuid4().hex[:6]
SECRET = f"vm-secret-{uuid.uuid4().hex}"
#: The measured process: reads a file of the image (every block checked by dm-verity in the
#: guest) before it shows the secret and the TD's evidence.
APP_CMD = ["sh", "-c", "cat /etc/app.conf >/dev/null && cat /run/arca/secrets/app.key && echo "
           "&& cat /run/arca/evidence.json"]
APP_CONF = b"mode=prod\n" * 2000
#: One VM boot under TCG with 8 engineers on 2 cores: generous, a wedged VM still fails.
BOOT = 240


def init_data(kbs_url: str) -> bytes:
    return (f'version = "0.1.0"\nalgorithm = "sha384"\n\n[data]\nkbs_url = "{kbs_url}"\n'
            "resources = '''\n[[resource]]\npath = \"default/key/app\"\nname = \"app.key\"\n"
            "'''\nagent = '''\nkbs_timeout = 20.0\nkbs_retries = 2\nkbs_backoff = 0.5\n"
            "insecure_kbs = true\n'''\n"
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
    build_busybox_image(layout, "app", files={"/etc/app.conf": APP_CONF},
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


def wait_qemu(cid: str, timeout: float = 60) -> list[int]:
    """The QEMU of ``cid`` (``ctr run -d`` returns once the VMM process runs; it starts QEMU
    a moment later)."""
    deadline = time.monotonic() + timeout
    while not (found := qemu_of(cid)):
        assert time.monotonic() < deadline, f"no QEMU for {cid}"
        time.sleep(0.1)
    return found


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


def _start(world: World, image: str, cid: str, *cmd: str, tty: bool = False,
           init: bytes | None = None, runtime: str = RUNTIME) -> subprocess.Popen[str]:
    ann = list(VM)
    if init is not None:
        ann += ["--annotation", f"io.arca.init-data={base64.b64encode(init).decode()}"]
    return subprocess.Popen(
        world.ctrd.ctr_argv("run", "--rm", "--net-host", *world.ctrd.run_args(runtime), *ann,
                            world.images[image], cid, *cmd),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _readline(proc: subprocess.Popen[str], timeout: float = BOOT) -> str:
    assert proc.stdout is not None
    ready = select.select([proc.stdout], [], [], timeout)[0]
    assert ready, "no output from the workload"
    return proc.stdout.readline().strip()


def test_terminal_with_window_size(world: World) -> None:
    cid = world.cid("tty")
    master, slave = pty.openpty()
    from tests.support.user_terminal import set_size

    set_size(slave, 33, 101)
    proc = subprocess.Popen(
        world.ctrd.ctr_argv("run", "--rm", "-t", *world.ctrd.run_args(RUNTIME), *VM,
                            world.images["latest"], cid, "sh", "-c",
                            "busybox tty; busybox stty size; echo $((6*7)); exit 3"),
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    got = b""
    try:
        deadline = time.monotonic() + BOOT
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    got += os.read(master, 4096)
                except OSError:
                    break
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = got.decode(errors="replace").replace("\r", "")
    assert proc.returncode == 3, text
    lines = text.splitlines()
    assert "42" in lines, text
    assert any(ln.startswith("/dev/") for ln in lines), f"the workload has no terminal: {text}"
    assert "33 101" in lines, f"window size not passed on: {text}"
    assert_nothing_left(world, cid)


def test_ctr_task_kill_delivers_sigterm_to_the_workload(world: World) -> None:
    cid = world.cid("term")
    proc = _start(world, "latest", cid, "sh", "-c",
                  'trap "echo got-term; exit 42" TERM; echo ready; '
                  "while true; do sleep 0.1; done")
    try:
        assert _readline(proc) == "ready"
        world.ctrd.ctr("tasks", "kill", cid)  # SIGTERM, ctr's default
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 42, stderr
    assert stdout.replace("\r", "").strip() == "got-term"
    assert_nothing_left(world, cid)


def test_sigkill_and_qemu_killed_from_outside_leave_nothing(world: World) -> None:
    """``ctr task kill -s SIGKILL`` of a running VM container, and QEMU killed by someone
    else: each is gone with its VM, and says why."""
    killed, outside = world.cid("sigkill"), world.cid("qemukill")
    p1 = _start(world, "latest", killed, "sh", "-c", "echo ready; sleep 1000")
    p2 = _start(world, "latest", outside, "sh", "-c", "echo ready; sleep 1000")
    try:
        assert _readline(p1) == "ready"
        assert _readline(p2) == "ready"
        world.ctrd.ctr("tasks", "kill", "-s", "SIGKILL", killed)
        _, err1 = p1.communicate(timeout=60)
        qemu = qemu_of(outside)
        assert len(qemu) == 1, qemu
        os.kill(qemu[0], signal.SIGKILL)
        _, err2 = p2.communicate(timeout=60)
    finally:
        for p in (p1, p2):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert p1.returncode == 137, err1
    assert p2.returncode == 125, err2
    line = err2.strip().splitlines()[-1]
    assert line.startswith("arca-vm: error:") and "QEMU" in line, err2
    assert "Traceback" not in err2
    assert_nothing_left(world, killed)
    assert_nothing_left(world, outside)


# -- attestation, secrets, measurement ----------------------------------------------------------


def _measure(world: World, image: str = "app") -> dict:
    return json.loads(world.arca("measure", f"oci:{world.layout}:{image}", "--tee", "vm",
                                 "--init-data", str(world.init_file), "--json").stdout)


def test_secret_after_attestation_and_measurement_equals_arca_measure(world: World) -> None:
    from arca.host.simtee.locations import root_cert_path
    from arca.verifier.base import Expected
    from arca.verifier.sim import SimVerifier

    cid = world.cid("secret")
    res = world.run("app", cid, init=world.init)
    assert res.returncode == 0, res.stderr
    first, _, rest = out(res).partition("\n")
    assert first == SECRET
    doc = json.loads(rest)
    ref = _measure(world)
    claims = SimVerifier([root_cert_path().read_bytes()], tee="vm").verify(
        base64.b64decode(doc["evidence"]),
        expected=Expected(report_data=bytes.fromhex(doc["report_data"]),
                          init_data_hash=bytes.fromhex(ref["init_data_hash"])))
    assert claims.tee == "vm"
    assert claims.values["td_id"] == cid
    assert claims.values["measurement"] == ref["measurement"]
    # what the tenant's policy pins is that same value
    assert ref["measurement"] in json.dumps(world.policy)  # type: ignore[attr-defined]
    assert_nothing_left(world, cid)


def assert_refused(res: subprocess.CompletedProcess[str], reason: str) -> None:
    assert res.returncode != 0, (res.stdout, res.stderr)
    assert SECRET not in res.stdout and SECRET not in res.stderr
    assert reason in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_another_image_is_refused(world: World) -> None:
    cid = world.cid("other")
    res = world.run("other", cid, init=world.init)
    assert_refused(res, "resource policy denies default/key/app")
    assert_nothing_left(world, cid)


def _rootfs_image(world: World) -> pathlib.Path:
    return pathlib.Path(_measure(world)["launch"]["rootfs_path"])


class _Patched:
    """A cached file changed in place as a hostile host would, restored afterwards."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.saved = path.read_bytes()
        self.mode = path.stat().st_mode

    def __enter__(self) -> _Patched:
        return self

    def write(self, data: bytes) -> None:
        self.path.chmod(0o644)
        self.path.write_bytes(data)
        self.path.chmod(self.mode & 0o7777)

    def __exit__(self, *exc: object) -> None:
        self.write(self.saved)


def test_flipped_rootfs_byte_after_the_policy_is_an_io_error_and_no_secret(
        world: World) -> None:
    img = _rootfs_image(world)
    with _Patched(img) as p:
        at = p.saved.find(APP_CONF[:4000]) + 2048
        assert at > 2048
        data = bytearray(p.saved)
        data[at] ^= 0x01
        p.write(bytes(data))
        cid = world.cid("flip")
        res = world.run("app", cid, init=world.init)
    assert_refused(res, "Input/output error")
    assert_nothing_left(world, cid)


def test_changed_initramfs_is_refused(world: World) -> None:
    """The cached initramfs edited in place as a hostile host would (one byte of ``/init``,
    in its comment line, so the guest still boots exactly as before): the launch measurement
    changes and the broker refuses."""
    from arca.host.backends.vm.initramfs import INIT

    initrd = pathlib.Path(_measure(world)["launch"]["initrd_path"])
    comment = INIT.splitlines()[1]
    with _Patched(initrd) as p:
        at = p.saved.find(comment)
        assert at > 0
        data = bytearray(p.saved)
        data[at + 2] ^= 0x20  # "# Arca vm guest" -> "# arca vm guest"
        p.write(bytes(data))
        cid = world.cid("initrd")
        res = world.run("app", cid, init=world.init)
    assert_refused(res, "resource policy denies default/key/app")
    assert_nothing_left(world, cid)


def _wrapper(world: World, name: str, body: str) -> str:
    """An ``arca-runtime`` the shim calls with extra settings, as an operator (or a hostile
    host) configures a runtime: ``#!/bin/sh`` + ``exec arca-runtime "$@"``."""
    path = world.tmp / name
    path.write_text(f"#!/bin/sh\n{body}\nexec {RUNTIME} \"$@\"\n")
    path.chmod(0o755)
    return str(path)


def test_changed_kernel_is_refused(world: World) -> None:
    """The runtime pointed at a modified copy of the guest kernel (ARCA_VM_DATA)."""
    from arca.host.backends.vm import assets

    src = assets.data_dir()
    copy = world.tmp / "kernel-copy"
    copy.mkdir(exist_ok=True)
    shutil.copy(src / "kernel.json", copy / "kernel.json")
    (copy / "lib").symlink_to(src / "lib")
    # trailing bytes after the ELF: QEMU's loader ignores them, the measurement does not
    (copy / "vmlinux").write_bytes((src / "vmlinux").read_bytes() + b"\0hostile\0")
    rt = _wrapper(world, "rt-kernel", f"export ARCA_VM_DATA={copy}")
    cid = world.cid("kernel")
    res = world.run("app", cid, init=world.init, runtime=rt)
    assert_refused(res, "resource policy denies default/key/app")
    assert_nothing_left(world, cid)


def test_changed_kernel_command_line_is_refused(world: World) -> None:
    """A hostile host's runc edits the VM's command line after the runtime registered the
    launch (one more kernel option, recorded by the hostile runc): the TD, running the
    measured process under the measured init-data, must not get the secret."""
    marker = world.tmp / "cmdline-edited"
    hostile_runc = launch_editing_runc(
        world.tmp / "hostile-runc", 'i = doc["argv"].index("-append") + 1; '
        f'doc["argv"][i] += " arca.hostile=1"; open({str(marker)!r}, "w").write(doc["argv"][i])')
    rt = _wrapper(world, "rt-cmdline", f"export ARCA_RUNC={hostile_runc}")
    cid = world.cid("cmdline")
    res = world.run("app", cid, init=world.init, runtime=rt)
    assert "arca.hostile=1" in marker.read_text()  # the VM was launched with it
    assert_nothing_left(world, cid)
    assert_refused(res, "arca")


def test_mount_over_measured_content_is_refused(world: World) -> None:
    cid = world.cid("mount")
    hostile = world.tmp / "hostile-etc"
    hostile.mkdir(exist_ok=True)
    (hostile / "app.conf").write_text("mode=hostile\n")
    res = world.run("app", cid, init=world.init, extra=(
        "--mount", f"type=bind,src={hostile},dst=/etc,options=rbind:ro"))
    assert_refused(res, "/etc")
    assert "mount" in res.stderr
    world.ctrd.ctr("containers", "delete", cid, check=False)
    assert_nothing_left(world, cid)


def test_volume_and_published_port_through_containerd(world: World) -> None:
    """``ctr --mount`` of a directory the measured init-data allows reaches the guest over
    virtio-fs (both ways), and ``io.arca.ports`` forwards a port of the container's network
    namespace (here the host's: ``--net-host``) to the guest's server (ADRs 0042, 0043)."""
    import socket
    import urllib.request

    from arca.host.backends.vm import assets

    try:
        assets.virtiofsd()
    except assets.VmUnavailable as e:
        pytest.skip(str(e))
    data = world.tmp / "ctr-volume"
    data.mkdir(exist_ok=True)
    (data / "in.txt").write_text("from-the-host\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    init = (b'version = "0.1.0"\nalgorithm = "sha384"\n\n[data]\n'
            b'policy = \'{"allow_mounts": ["/data"]}\'\n')
    cid = world.cid("volume")
    res = world.run("latest", cid, "sh", "-c", "cat /data/in.txt > /data/copied.txt; "
                    f"exec busybox httpd -f -p {port} -h /data", init=init, detach=True,
                    extra=("--mount", f"type=bind,src={data},dst=/data,options=rbind:rw",
                           "--annotation", f"io.arca.ports=tcp/{port}"))
    assert res.returncode == 0, res.stderr
    try:
        deadline = time.monotonic() + BOOT
        while True:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/copied.txt",
                                              timeout=5).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "the guest's server never answered"
                time.sleep(1)
        assert body == b"from-the-host\n"
        assert (data / "copied.txt").read_text() == "from-the-host\n"
    finally:
        world.remove(cid)
    assert_nothing_left(world, cid)


# -- the shared rootfs cache, and what create/delete leave ---------------------------------------


def test_two_vms_of_one_image_share_one_cached_rootfs_image(world: World) -> None:
    a, b = world.cid("share-a"), world.cid("share-b")
    try:
        res = world.run("latest", a, "sleep", "1000", detach=True)
        assert res.returncode == 0, res.stderr
        before = world.cache_images()  # the image's rootfs image is built by now
        res = world.run("latest", b, "sleep", "1000", detach=True)
        assert res.returncode == 0, res.stderr
        qa, qb = wait_qemu(a), wait_qemu(b)
        assert len(qa) == 1 and len(qb) == 1, (qa, qb)
        sa, sb = open_rootfs_image(qa[0]), open_rootfs_image(qb[0])
        assert (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
        cached = [world.arca_root / "vm" / p for p in world.cache_images()
                  if p.startswith("rootfs/")]
        assert any((c.stat().st_dev, c.stat().st_ino) == (sa.st_dev, sa.st_ino)
                   for c in cached)
        assert world.cache_images() == before  # nothing built for the second VM
    finally:
        world.remove(a)
        world.remove(b)
    before = [i for i in before if not i.startswith("vmm-root")]
    assert_nothing_left(world, a, images_before=before)
    assert_nothing_left(world, b, images_before=before)


def test_twenty_create_delete_cycles_leave_nothing(world: World) -> None:
    before = world.cache_images()
    run_dir_before = sorted(os.listdir(world.arca_run))
    for i in range(20):
        cid = world.cid(f"cycle{i}")
        res = world.run("latest", cid, "sleep", "1000", detach=True)
        assert res.returncode == 0, res.stderr
        assert len(wait_qemu(cid)) == 1
        world.remove(cid)
        assert_nothing_left(world, cid, images_before=before)
    assert world.cache_images() == before
    assert sorted(os.listdir(world.arca_run)) == run_dir_before


# -- faults: one clear line through ctr, nothing left ----------------------------------------------


@pytest.mark.parametrize(("case", "body", "message"), [
    ("no-kernel", "export ARCA_VM_DATA=/nonexistent/arca-vm", "no guest kernel installed"),
    ("no-qemu", "export ARCA_VM_QEMU=/nonexistent/qemu-system-x86_64",
     "/nonexistent/qemu-system-x86_64"),
])
def test_missing_kernel_or_qemu_is_one_line(world: World, case: str, body: str,
                                            message: str) -> None:
    cid = world.cid(case)
    before = world.cache_images()
    res = world.run("latest", cid, "true", runtime=_wrapper(world, f"rt-{case}", body))
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if message in ln]
    assert len(lines) == 1 and "OCI runtime create failed" in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    world.ctrd.ctr("containers", "delete", cid, check=False)
    assert_nothing_left(world, cid, images_before=before)


def test_corrupt_cached_rootfs_image_is_one_line(world: World) -> None:
    """The erofs superblock of the cached image zeroed: the guest cannot mount the rootfs
    (dm-verity refuses the block) and says so before any workload or attestation."""
    from arca.host.backends.vm.rootfs import ensure_rootfs_image  # noqa: F401 - documents where

    img = _rootfs_image(world)
    with _Patched(img) as p:
        p.write(bytes(4096) + p.saved[4096:])
        cid = world.cid("corrupt")
        res = world.run("app", cid, init=world.init)
    assert_refused(res, "arca-vm: error:")
    line = next(ln for ln in res.stderr.splitlines() if "arca-vm: error:" in ln)
    assert "rootfs" in line or "mount" in line or "Input/output" in line, res.stderr
    assert_nothing_left(world, cid)


def test_guest_that_panics_is_one_line(world: World) -> None:
    """An initramfs cut short: the kernel finds no init and panics; QEMU exits."""
    initrd = pathlib.Path(_measure(world)["launch"]["initrd_path"])
    with _Patched(initrd) as p:
        p.write(p.saved[:1 << 20])
        cid = world.cid("panic")
        res = world.run("latest", cid, "true")
    assert res.returncode == 125, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("arca-vm: error:") and "panic" in line.lower(), res.stderr
    assert_nothing_left(world, cid)


def test_guest_that_never_reports_is_one_line(world: World) -> None:
    cid = world.cid("timeout")
    rt = _wrapper(world, "rt-timeout", "export ARCA_VM_BOOT_TIMEOUT=1")
    res = world.run("latest", cid, "true", runtime=rt)
    assert res.returncode == 125, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("arca-vm: error: the guest did not report within 1s"), res.stderr
    assert_nothing_left(world, cid)
