"""Issue 2 acceptance through real containerd: a busybox image from a real registry, run by
``ctr run --runc-binary arca-runtime`` in a ``sim`` trust domain.

One containerd, one registry and one image for the module (they take seconds); every test
checks afterwards that its containers left nothing behind: no mounts, cgroups, sockets,
processes or TD registrations.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import pty
import select
import subprocess
import sys
import time

import pytest

from tests.support.containerd import (
    cgroups_named,
    containerd_available,
    ctr_world,
    mounts_mentioning,
    processes_of_container,
)
from tests.support.images import build_busybox_image
from tests.support.registry import registry_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (containerd_available() and registry_available()
                            and os.geteuid() == 0),
                       reason="needs root, containerd, ctr and docker-registry"),
]

RUNTIME = str(pathlib.Path(sys.executable).parent / "arca-runtime")
SIM = ["--annotation", "io.arca.tee=sim"]
EVIDENCE_CMD = ["/bin/cat", "/run/arca/evidence.json"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("ctrd-sim")
    layout = tmp / "layout"
    build_busybox_image(layout, "latest")
    build_busybox_image(layout, "evidence", cmd=EVIDENCE_CMD, env=["GREETING=hello"],
                        workdir="/tmp")
    with ctr_world(tmp, layout, ("latest", "evidence")) as (ctrd, images, env):
        yield ctrd, images, layout, env


def ctr_run(ctrd, image: str, cid: str, *cmd: str, extra: tuple[str, ...] = (),
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return ctrd.ctr("run", "--rm", *ctrd.run_args(RUNTIME), *SIM, *extra, image, cid, *cmd,
                    check=False, timeout=timeout)


def assert_nothing_left(ctrd, cid: str) -> None:
    from arca.host.simtee import client, locations

    deadline = time.monotonic() + 10
    while True:
        leftovers = {
            "mounts": mounts_mentioning(f"/{cid}/"),
            "cgroups": cgroups_named(cid),
            "processes": processes_of_container(ctrd, cid),
            "td_dir": [str(locations.device_dir(cid))] if locations.device_dir(cid).exists()
            else [],
            "registrations": [t["td_id"] for t in client.list_tds() if t["td_id"] == cid]
            if client.is_running() else [],
            "records": [p.name for p in locations.registrations_dir().glob(f"{cid}.json")],
            "state": [cid] if (pathlib.Path(os.environ["ARCA_RUN"]) / "containers" / cid).exists()
            else [],
            "ctr": [c for c in ctrd.ctr("containers", "ls", "-q").stdout.split() if c == cid],
        }
        if not any(leftovers.values()):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"container {cid} left: {leftovers}")
        time.sleep(0.1)


def test_output_and_exit_code_come_back(world) -> None:
    ctrd, images, _, _ = world
    res = ctr_run(ctrd, images["latest"], "exit7", "sh", "-c", "echo out-$((3*4)); exit 7")
    assert res.returncode == 7, res.stderr
    assert res.stdout.replace("\r", "") == "out-12\n"
    assert_nothing_left(ctrd, "exit7")


def test_plain_container_passes_straight_through(world) -> None:
    ctrd, images, _, _ = world
    res = ctrd.ctr("run", "--rm", *ctrd.run_args(RUNTIME), images["latest"], "plain",
                   "sh", "-c", "test -e /run/arca && echo td || echo plain; exit 3", check=False)
    assert (res.returncode, res.stdout.strip()) == (3, "plain")
    assert_nothing_left(ctrd, "plain")


def _evidence_of(stdout: str) -> tuple[dict, bytes]:
    doc = json.loads(stdout)
    return doc, base64.b64decode(doc["evidence"])


def expected_measurement(layout: pathlib.Path, tag: str, tmp: pathlib.Path) -> str:
    """The measurement recomputed from the OCI layout alone: umoci unpack, tree digest, the
    process from the image config (not from containerd's spec), the guest runtime's tree."""
    from arca.host.guestruntime import ensure_guest_runtime
    from arca.host.runtime.bundle import measured_env
    from arca.host.treedigest import tree_digest
    from arca.wire.descriptor import LaunchDescriptor, ProcessSpec

    bundle = tmp / f"unpacked-{tag}"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)], check=True,
                   capture_output=True)
    index = json.loads((layout / "index.json").read_text())
    desc = next(m for m in index["manifests"]
                if m["annotations"]["org.opencontainers.image.ref.name"] == tag)

    def blob(digest: str) -> dict:
        algo, hexd = digest.split(":")
        return json.loads((layout / "blobs" / algo / hexd).read_text())

    cfg = blob(blob(desc["digest"])["config"]["digest"])["config"]
    uid, _, gid = (cfg.get("User") or "0:0").partition(":")
    spec = ProcessSpec(tuple((cfg.get("Entrypoint") or []) + (cfg.get("Cmd") or [])),
                       cfg.get("WorkingDir") or "/", int(uid), int(gid or 0),
                       measured_env(cfg.get("Env") or []))
    gr = ensure_guest_runtime()
    d = LaunchDescriptor("sim", tree_digest(gr.path), tree_digest(bundle / "rootfs"), spec)
    return d.measurement().hex()


def test_evidence_verifies_and_measurement_matches_the_image(world) -> None:
    from arca.host.simtee.locations import root_cert_path
    from arca.verifier.base import Expected
    from arca.verifier.sim import SimVerifier

    ctrd, images, layout, env = world
    res = ctr_run(ctrd, images["evidence"], "ev1")
    assert res.returncode == 0, res.stderr
    doc, ev = _evidence_of(res.stdout)
    claims = SimVerifier([root_cert_path().read_bytes()]).verify(
        ev, expected=Expected(report_data=bytes.fromhex(doc["report_data"]),
                              init_data_hash=bytes(48)))
    assert claims.values["td_id"] == "ev1"
    assert claims.values["measurement"] == expected_measurement(layout, "evidence", env.tmp)
    assert_nothing_left(ctrd, "ev1")


def test_second_container_cannot_get_the_first_ones_report(world) -> None:
    from arca.host.simtee.locations import root_cert_path
    from arca.verifier.sim import SimVerifier

    ctrd, images, _, _ = world
    ctrd.ctr("run", "-d", *ctrd.run_args(RUNTIME), *SIM, images["latest"], "first",
             "sleep", "60")
    try:
        first = next(t for t in _wait_tds() if t["td_id"] == "first")
        script = ("ls /run/arca/tee; ls /run/arca-host 2>&1; "
                  "/.arca/bin/arca-evidence --report-data " + "ab" * 64)
        res = ctr_run(ctrd, images["latest"], "second", "sh", "-c", script)
        assert res.returncode == 0, res.stderr
        lines = res.stdout.splitlines()
        assert "sim.sock" in lines and "No such file or directory" in res.stdout
        doc, ev = _evidence_of(lines[-1])
        claims = SimVerifier([root_cert_path().read_bytes()]).verify(ev)
        assert claims.values["td_id"] == "second"
        assert claims.values["report_data"] == "ab" * 64
        assert claims.values["measurement"] != first["measurement"]
    finally:
        ctrd.ctr("tasks", "kill", "-s", "SIGKILL", "first", check=False)
        _wait_stopped(ctrd, "first")
        ctrd.ctr("tasks", "delete", "first", check=False)
        ctrd.ctr("containers", "delete", "first", check=False)
    assert_nothing_left(ctrd, "first")
    assert_nothing_left(ctrd, "second")


def _wait_tds() -> list[dict]:
    from arca.host.simtee import client

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if client.is_running() and client.list_tds():
            return client.list_tds()
        time.sleep(0.05)
    raise AssertionError("no TD registered")


def _wait_stopped(ctrd, cid: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = ctrd.ctr("tasks", "ls", check=False).stdout
        if not any(ln.split()[0] == cid and "RUNNING" in ln for ln in out.splitlines()[1:]):
            return
        time.sleep(0.05)


def _wait_running(ctrd, cid: str, marker: pathlib.Path | None = None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = ctrd.ctr("tasks", "ls", check=False).stdout
        if any(ln.split()[0] == cid and "RUNNING" in ln for ln in out.splitlines()[1:]):
            return
        time.sleep(0.05)
    raise AssertionError(f"{cid} never ran")


def test_sigterm_through_ctr_task_kill(world) -> None:
    ctrd, images, _, _ = world
    script = 'trap "echo got-term; exit 42" TERM; echo ready; while true; do sleep 0.05; done'
    proc = subprocess.Popen(
        ctrd.ctr_argv("run", "--rm", *ctrd.run_args(RUNTIME), *SIM, images["latest"], "term",
                      "sh", "-c", script),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        ctrd.ctr("tasks", "kill", "term")  # SIGTERM is ctr's default
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 42, err
    assert out.strip() == "got-term"
    assert_nothing_left(ctrd, "term")


def test_interactive_tty(world) -> None:
    ctrd, images, _, _ = world
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        ctrd.ctr_argv("run", "--rm", "-t", *ctrd.run_args(RUNTIME), *SIM, images["latest"],
                      "tty1", "sh"),
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out = b""
    try:
        os.write(master, b"tty >/dev/null && echo is-a-tty; echo $((6*7)); exit 3\n")
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                try:
                    out += os.read(master, 4096)
                except OSError:
                    break
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = out.decode(errors="replace")
    assert proc.returncode == 3, text
    assert "is-a-tty" in text and "42" in text
    assert_nothing_left(ctrd, "tty1")


@pytest.mark.parametrize(
    ("case", "extra", "message"),
    [
        ("unknown-tee", ("--annotation", "io.arca.tee=quantum"), "unknown TEE 'quantum'"),
        ("no-rootfs", ("--rootfs",), "does not exist"),
        ("bad-config", ("--config",), "process is missing"),
    ],
)
def test_refusals_are_one_line_through_ctr(world, case: str, extra: tuple[str, ...],
                                           message: str) -> None:
    ctrd, images, _, env = world
    cid = f"refuse-{case}"
    if case == "no-rootfs":
        args = [*ctrd.run_args(RUNTIME), *SIM, "--rootfs", str(env.tmp / "missing"), cid, "sh"]
    elif case == "bad-config":
        spec = env.tmp / "spec.json"
        (env.tmp / "plain-rootfs").mkdir(exist_ok=True)
        spec.write_text(json.dumps({"ociVersion": "1.0.2",
                                    "root": {"path": str(env.tmp / "plain-rootfs")},
                                    "annotations": {"io.arca.tee": "sim"},
                                    "linux": {"namespaces": [{"type": "mount"}]}}))
        args = [*ctrd.run_args(RUNTIME), "--config", str(spec), cid]
    else:
        args = [*ctrd.run_args(RUNTIME), *extra, images["latest"], cid, "true"]
    res = ctrd.ctr("run", "--rm", *args, check=False)
    assert res.returncode != 0
    assert "OCI runtime create failed" in res.stderr and message in res.stderr, res.stderr
    line = next(ln for ln in res.stderr.splitlines() if "OCI runtime create failed" in ln)
    assert "Traceback" not in res.stderr and message in line
    ctrd.ctr("containers", "delete", cid, check=False)
    assert_nothing_left(ctrd, cid)
