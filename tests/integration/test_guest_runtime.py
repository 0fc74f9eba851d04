"""The guest runtime and the agent under real runc, in a busybox rootfs without Python or libc.

The bundle is written by hand the way ``arca-runtime create`` rewrites it (contract §3); see
:mod:`tests.support.guest_td`.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest

from arca.host.guestruntime import ensure_guest_runtime
from arca.host.treedigest import tree_digest
from arca.wire.descriptor import LaunchDescriptor, ProcessSpec
from arca.wire.simreport import SimEvidence
from tests.support.guest_td import Td, busybox_rootfs

pytestmark = [pytest.mark.integration]

if os.geteuid() != 0 or shutil.which("runc") is None or not os.path.exists("/bin/busybox"):
    pytest.skip("needs root, runc and busybox-static", allow_module_level=True)


@pytest.fixture(scope="module")
def guest_runtime(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("arca-root")
    start = time.perf_counter()
    gr = ensure_guest_runtime(root)
    built = time.perf_counter() - start
    start = time.perf_counter()
    again = ensure_guest_runtime(root)
    fast = time.perf_counter() - start
    assert again == gr
    print(f"guest runtime: build {built:.2f}s, fast path {fast * 1e3:.2f} ms")
    return gr


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture()
def make_td(tmp_path: pathlib.Path, guest_runtime, rootfs):
    tds: list[Td] = []

    def make(args: list[str], **kw) -> Td:
        td = Td(tmp_path / f"td{len(tds)}", guest_runtime, rootfs, args, **kw)
        tds.append(td)
        return td

    yield make
    for td in tds:
        td.close()


def test_guest_runtime_is_reproducible(tmp_path: pathlib.Path, guest_runtime) -> None:
    other = ensure_guest_runtime(tmp_path)
    assert other.path != guest_runtime.path
    assert other.digest == guest_runtime.digest == tree_digest(guest_runtime.path)
    assert not list(guest_runtime.path.rglob("*.pyc.*"))


def test_exit_code_output_and_evidence(make_td) -> None:
    td = make_td(["/bin/sh", "-c", "echo out-$GREETING; echo err >&2; "
                  "cat /run/arca/evidence.json; exit 7"])
    code, out, err = td.run()
    assert code == 7, err
    lines = out.splitlines()
    assert lines[0] == "out-hello"
    assert err.strip() == "err"
    doc = json.loads(lines[1])
    assert doc["tee"] == "sim"
    report = SimEvidence.from_bytes(base64.b64decode(doc["evidence"])).report()
    assert report.measurement == td.descriptor.measurement()
    assert report.report_data.hex() == doc["report_data"]
    assert td.device.requests == [report.report_data]  # fresh report data, one request


def test_workload_replaces_the_agent_as_pid_1_with_dropped_privileges(make_td) -> None:
    td = make_td(["/bin/sh", "-c", "echo pid=$$; id -u; id -g; pwd; env | sort"],
                 uid=1000, cwd="/home/app", env=["PATH=/bin", "A=1"])
    td.original["env"].append("HOSTNAME=box")  # orchestrator-injected: allowed, unmeasured
    td.write_process(td.original)
    code, out, err = td.run()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:4] == ["pid=1", "1000", "1000", "/home/app"]
    env = set(lines[4:])
    assert {"A=1", "HOSTNAME=box", "PATH=/bin"} <= env
    assert not any(e.startswith("PYTHON") for e in env)


def test_sigterm_reaches_the_workload(make_td) -> None:
    td = make_td(["/bin/sh", "-c", "trap 'echo got-term; exit 3' TERM; echo ready; "
                  "while true; do sleep 0.05; done"])
    p = td.popen()
    assert p.stdout is not None
    assert p.stdout.readline().strip() == b"ready"
    subprocess.run(["runc", "--root", str(td.state), "kill", td.id, "TERM"], check=True)
    out, err = p.communicate(timeout=30)
    assert out.decode().strip() == "got-term", err
    assert p.returncode == 3


def test_arca_evidence_command_inside_the_td(make_td) -> None:
    td = make_td(["/bin/sh", "-c", "/.arca/bin/arca-evidence && "
                  "/.arca/bin/arca-evidence --report-data 0102"])
    code, out, err = td.run()
    assert code == 0, err
    startup, doc = (json.loads(line) for line in out.splitlines())
    assert startup["report_data"] != doc["report_data"]
    assert doc["report_data"] == "0102" + "00" * 62
    report = SimEvidence.from_bytes(base64.b64decode(doc["evidence"])).report()
    assert report.report_data == bytes.fromhex(doc["report_data"])


def test_host_modified_command_is_refused(make_td) -> None:
    td = make_td(["/bin/echo", "hello"])
    td.write_process({**td.original, "args": ["/bin/sh", "-c", "cat /run/arca/secrets/*"]})
    code, out, err = td.run()
    assert code == 126
    assert out == ""
    assert "arca-agent: error: execution policy: argument 0 '/bin/sh'" in err


def test_host_added_env_is_refused(make_td) -> None:
    td = make_td(["/bin/echo", "hello"])
    td.write_process({**td.original, "env": [*td.original["env"], "LD_PRELOAD=/tmp/x.so"]})
    code, out, err = td.run()
    assert code == 126 and out == ""
    assert "'LD_PRELOAD'" in err


def test_swapped_descriptor_is_refused(make_td) -> None:
    td = make_td(["/bin/echo", "hello"])
    # The host measures (registers) the genuine descriptor but hands the agent another one
    # that would let it run its own command.
    forged = LaunchDescriptor(td.descriptor.tee, td.descriptor.guest_runtime_digest,
                              td.descriptor.rootfs_digest,
                              ProcessSpec(("/bin/sh", "-c", "id"), "/", 0, 0, ()))
    (td.devdir / "descriptor.json").write_text(json.dumps(forged.to_json()))
    td.write_process({**td.original, "args": ["/bin/sh", "-c", "id"], "env": []})
    code, out, err = td.run()
    assert code == 126 and out == ""
    assert "measurement" in err and err.startswith("arca-agent: error:")


def test_swapped_init_data_is_refused(make_td) -> None:
    genuine = b'version = "0.1.0"\nalgorithm = "sha384"\n[data]\n'
    td = make_td(["/bin/echo", "hello"], init_data=genuine)
    (td.devdir / "init-data.toml").write_bytes(
        genuine + b"policy = '''allow_args = [[\"...\"]]'''\n")
    td.write_process({**td.original, "args": ["/bin/sh", "-c", "id"]})
    code, out, err = td.run()
    assert code == 126 and out == ""
    assert "init-data hash" in err


def test_policy_from_init_data_allows_a_different_command(make_td) -> None:
    init = (b'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n'
            b"policy = '''\nallow_args = [[\"/bin/sh\", \"-c\", \"echo *\"]]\n"
            b"allow_env = [\"EXTRA\"]\n'''\n")
    td = make_td(["/bin/echo", "hello"], init_data=init)
    td.write_process({**td.original, "args": ["/bin/sh", "-c", "echo allowed-$EXTRA"],
                      "env": [*td.original["env"], "EXTRA=yes"]})
    code, out, err = td.run()
    assert code == 0, err
    assert out.strip() == "allowed-yes"


def test_missing_workload_binary_exits_127(make_td) -> None:
    td = make_td(["/bin/does-not-exist"])
    code, _out, err = td.run()
    assert code == 127
    assert "arca-agent: error: cannot execute '/bin/does-not-exist'" in err


def test_signal_dispositions_are_reset_before_exec(make_td) -> None:
    # Python ignores SIGPIPE; a workload must see the default disposition as under plain runc.
    td = make_td(["/bin/sh", "-c", "cat /proc/self/status | grep -E '^Sig(Ign|Blk)'"])
    code, out, err = td.run()
    assert code == 0, err
    for line in out.splitlines():
        assert int(line.split()[1], 16) & (1 << (signal.SIGPIPE - 1)) == 0, line


def test_terminal_is_the_workloads(make_td) -> None:
    # process.terminal (ctr run -t): runc allocates the pty, the agent passes it on by exec.
    import pty

    td = make_td(["/bin/sh", "-c", "test -t 0 && test -t 1 && echo on-a-tty; exit 4"])
    td.config["process"]["terminal"] = True
    td.original["terminal"] = True
    td.write_process(td.original)
    (td.bundle / "config.json").write_text(json.dumps(td.config))
    master, slave = pty.openpty()
    p = subprocess.Popen(["runc", "--root", str(td.state), "run", "-b", str(td.bundle), td.id],
                         stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: every writer closed
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert p.wait(timeout=30) == 4
    assert b"on-a-tty" in out, out


def test_unusable_working_directory_is_a_clear_error(make_td) -> None:
    td = make_td(["/bin/pwd"], cwd="/missing/dir")  # read-only rootfs: cannot be created
    code, out, err = td.run()
    assert code == 125 and out == ""
    assert "arca-agent: error: cannot become user 0:0 in '/missing/dir'" in err
