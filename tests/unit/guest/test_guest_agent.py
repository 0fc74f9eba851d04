"""Agent logic against the in-test sim device over a real unix socket: the evidence checks
(replay, swapped descriptor, swapped init-data), KBS retries against a real HTTP server that is
down, secret placement on a real tmpfs, and the whole agent run in a subprocess."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import pathlib
import subprocess
import sys
import threading
import time

import pytest

from arca.guest import agent
from arca.guest.agent import Inputs, Paths, check_evidence, fetch_secrets, place_secrets
from arca.guest.evidence import SimDevice
from arca.host.simtee.platform import init_data_hash
from arca.wire.descriptor import LaunchDescriptor, ProcessSpec
from arca.wire.errors import BindingMismatch, BrokerUnavailable, ConfigError, WireFormatError
from arca.wire.initdata import InitData
from tests.support.guest_simdevice import SimDeviceServer

ROOT = os.geteuid() == 0
SPEC = ProcessSpec(("/bin/sh", "-c", "echo from-workload $GREETING; exit 5"), "/", 0, 0,
                   ("GREETING=hi", "PATH=/usr/bin:/bin"))
DESCRIPTOR = LaunchDescriptor("sim", "sha256:" + "1" * 64, "sha256:" + "2" * 64, SPEC)
INIT = b'version = "0.1.0"\nalgorithm = "sha512"\n[data]\n'


def inputs(init: bytes | None = None, descriptor: LaunchDescriptor = DESCRIPTOR) -> Inputs:
    return Inputs(descriptor, ProcessSpec(SPEC.args, "/", 0, 0, SPEC.env),
                  InitData.parse(init) if init else None)


@pytest.fixture()
def device(tmp_path: pathlib.Path):
    server = SimDeviceServer(str(tmp_path / "sim.sock"), DESCRIPTOR.measurement())
    yield server
    server.close()


def test_evidence_binds_descriptor_and_fresh_report_data(device: SimDeviceServer) -> None:
    rd, raw = check_evidence(inputs(), SimDevice(device.path))
    assert device.requests == [rd] and len(rd) == 64 and raw
    rd2, _ = check_evidence(inputs(), SimDevice(device.path))
    assert rd2 != rd


def test_replayed_report_is_refused(device: SimDeviceServer) -> None:
    device.report_data_override = bytes(64)
    with pytest.raises(BindingMismatch, match="report data"):
        check_evidence(inputs(), SimDevice(device.path))


def test_swapped_descriptor_is_refused(device: SimDeviceServer) -> None:
    forged = LaunchDescriptor("sim", DESCRIPTOR.guest_runtime_digest, DESCRIPTOR.rootfs_digest,
                              ProcessSpec(("/bin/sh",), "/", 0, 0, ()))
    with pytest.raises(BindingMismatch, match="measurement"):
        check_evidence(inputs(descriptor=forged), SimDevice(device.path))


def test_init_data_must_match_the_bound_hash(device: SimDeviceServer) -> None:
    with pytest.raises(BindingMismatch, match="init-data"):
        check_evidence(inputs(INIT), SimDevice(device.path))  # device bound none
    device.init_data_hash = init_data_hash(INIT)  # sha512 truncated to 48
    check_evidence(inputs(INIT), SimDevice(device.path))
    with pytest.raises(BindingMismatch, match="init-data"):
        check_evidence(inputs(), SimDevice(device.path))  # host dropped the init-data


class _Unavailable(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_POST(self) -> None:  # noqa: N802
        type(self).hits += 1
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_vm_report_must_be_over_the_launch_record_the_guest_booted(
        tmp_path: pathlib.Path) -> None:
    """A launch-measured TD (``vm``): the report's measurement must be SHA-384 of the record of
    the guest's own command line and vCPUs; a host that booted another command line than the
    one the platform signed is refused before any evidence leaves the TD."""
    from arca.guest.evidence import SOURCES
    from arca.guest.vminit import launch_record
    from arca.host.backends.vm import launch

    cmdline = launch.cmdline("ab" * 32 + ":8", "cd" * 48)
    k, i = tmp_path / "vmlinux", tmp_path / "initrd"
    k.write_bytes(b"kernel")
    i.write_bytes(b"initrd")
    signed = launch.Launch(str(k), str(i), "rootfs", cmdline, vcpus=2)
    kd, idg = launch.file_sha384(str(k)), launch.file_sha384(str(i))
    booted = launch_record("vm", cmdline, 2, kd, idg)
    assert hashlib.sha384(booted).digest() == signed.measurement()  # the host's record
    vm_desc = LaunchDescriptor("vm", DESCRIPTOR.guest_runtime_digest, DESCRIPTOR.rootfs_digest,
                               SPEC)
    server = SimDeviceServer(str(tmp_path / "sim.sock"), signed.measurement(), tee="vm")
    try:
        source = SOURCES["sim-device"]("vm", str(tmp_path))

        def attempt(record: bytes | None) -> None:
            check_evidence(Inputs(vm_desc, inputs().host, None, record), source)

        attempt(booted)
        for record in (launch_record("vm", cmdline + " arca.hostile=1", 2, kd, idg),
                       launch_record("vm", cmdline, 1, kd, idg), None):
            with pytest.raises(BindingMismatch, match="measurement|launch record"):
                attempt(record)
        # lying about the kernel digest does not help the host: still another measurement
        with pytest.raises(BindingMismatch, match="measurement"):
            attempt(launch_record("vm", cmdline + " arca.hostile=1", 2, "00" * 48, idg))
        assert len(server.requests) == 5  # each refused right after the report was obtained
    finally:
        server.close()


def test_kbs_unavailable_is_retried_with_backoff_then_named(device: SimDeviceServer) -> None:
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    init = InitData.parse(
        INIT + f"kbs_url = '{url}'\nagent = '''kbs_retries = 3\nkbs_backoff = 0.05'''\n".encode())
    start = time.monotonic()
    with pytest.raises(BrokerUnavailable) as e:
        fetch_secrets(init, SimDevice(device.path))
    elapsed = time.monotonic() - start
    srv.shutdown()
    assert _Unavailable.hits == 4
    assert elapsed >= 0.05 + 0.1 + 0.2
    assert url in str(e.value) and "4 attempts" in str(e.value)


def test_kbs_refusing_connections(device: SimDeviceServer) -> None:
    init = InitData.parse(INIT + b"kbs_url = 'http://127.0.0.1:9'\nagent = 'kbs_retries = 0'\n")
    with pytest.raises(BrokerUnavailable, match="127.0.0.1:9"):
        fetch_secrets(init, SimDevice(device.path))


RESOURCES = INIT + b"""kbs_url = "http://kbs"
resources = '''
[[resource]]
path = "default/key/app"
name = "app.key"
env = "APP_KEY"
[[resource]]
path = "default/key/bin"
name = "blob"
[[resource]]
path = "default/key/envonly"
name = "token"
env = "TOKEN"
file = false
'''
"""


@pytest.fixture()
def tmpfs(tmp_path: pathlib.Path):
    if not ROOT:
        pytest.skip("mounting a tmpfs needs root")
    d = tmp_path / "run"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(d)], check=True)
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


def test_secrets_go_to_tmpfs_files_and_env(tmpfs: pathlib.Path) -> None:
    init = InitData.parse(RESOURCES)
    secrets = {"app.key": b"s3cret", "blob": b"\x00\xff", "token": b"tok"}
    spec = ProcessSpec(("/x",), "/", 1000, 1001, ())
    env = place_secrets(init, secrets, spec, str(tmpfs))
    assert env == ["APP_KEY=s3cret", "TOKEN=tok"]
    sdir = tmpfs / "secrets"
    assert sorted(p.name for p in sdir.iterdir()) == ["app.key", "blob"]
    st = (sdir / "blob").stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o400, 1000, 1001)
    assert (sdir / "blob").read_bytes() == b"\x00\xff"
    dst = sdir.stat()
    assert (dst.st_mode & 0o7777, dst.st_uid) == (0o500, 1000)


def test_secrets_refused_outside_a_memory_filesystem(tmp_path: pathlib.Path) -> None:
    if agent._fs_type(str(tmp_path)) in agent.MEMORY_FS:
        pytest.skip("tmp_path is itself on tmpfs here")
    with pytest.raises(ConfigError, match="not a memory filesystem"):
        place_secrets(InitData.parse(RESOURCES), {"app.key": b"x", "blob": b"y", "token": b"z"},
                      SPEC, str(tmp_path))
    assert not (tmp_path / "secrets").exists()


def test_binary_secret_cannot_go_into_env(tmpfs: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="not UTF-8"):
        place_secrets(InitData.parse(RESOURCES), {"app.key": b"\xff", "blob": b"", "token": b""},
                      SPEC, str(tmpfs))


def _run_agent(devdir: pathlib.Path, rundir: pathlib.Path) -> subprocess.CompletedProcess:
    code = ("import sys; from arca.guest.agent import main, Paths; "
            f"sys.exit(main(Paths({str(devdir)!r}, {str(rundir)!r})))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture()
def td(tmp_path: pathlib.Path):
    devdir, rundir = tmp_path / "tee", tmp_path / "run"
    devdir.mkdir()
    rundir.mkdir()
    (devdir / "descriptor.json").write_text(json.dumps(DESCRIPTOR.to_json()))
    (devdir / "process.json").write_text(json.dumps(
        {"args": list(SPEC.args), "env": list(SPEC.env), "cwd": "/",
         "user": {"uid": 0, "gid": 0}}))
    server = SimDeviceServer(str(devdir / "sim.sock"), DESCRIPTOR.measurement())
    yield devdir, rundir
    server.close()


def test_agent_execs_the_workload(td) -> None:
    devdir, rundir = td
    res = _run_agent(devdir, rundir)
    assert res.returncode == 5, res.stderr
    assert res.stdout == "from-workload hi\n"
    doc = json.loads((rundir / "evidence.json").read_text())
    assert doc["tee"] == "sim" and len(bytes.fromhex(doc["report_data"])) == 64


@pytest.mark.parametrize("mutate,code,needle", [
    (lambda d: (d / "process.json").write_text('{"args": ["/bin/sh"], "cwd": "/"}'), 126,
     "execution policy: argument 1"),
    (lambda d: (d / "descriptor.json").write_text("{"), 125, "launch descriptor is not JSON"),
    (lambda d: (d / "process.json").unlink(), 125, "process.json"),
    (lambda d: (d / "init-data.toml").write_text('version = "0.1.0"\n[data]\nx = "1"\n'), 125,
     "unknown key(s) x"),
    (lambda d: (d / "init-data.toml").write_text('version = "0.1.0"\n'), 126, "init-data hash"),
    (lambda d: (d / "sim.sock").unlink(), 126, "sim device"),
])
def test_agent_failures_print_one_line_and_exit_code(td, mutate, code: int,
                                                     needle: str) -> None:
    devdir, rundir = td
    mutate(devdir)
    res = _run_agent(devdir, rundir)
    assert res.returncode == code
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("arca-agent: error: ")
    assert needle in lines[0]


def test_read_inputs_refuses_non_json_process(tmp_path: pathlib.Path) -> None:
    (tmp_path / "descriptor.json").write_text(json.dumps(DESCRIPTOR.to_json()))
    (tmp_path / "process.json").write_bytes(b"\xff")
    with pytest.raises(WireFormatError, match="process.json"):
        agent.read_inputs(Paths(str(tmp_path), str(tmp_path)))
