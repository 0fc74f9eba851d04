"""Issue 11, process semantics of the ``vm`` backend through real containerd (``ctr run
--runc-binary arca-runtime --annotation io.arca.tee=vm``): stdin (binary, end of file), ``-t``
with the window size followed when ctr's terminal is resized (the shim's console resize, then
SIGWINCH in the guest), ``ctr task exec`` run *inside the guest* and only as the TD's measured
policy allows (the guest re-checks: an exec forced past the host's check is refused in the
TD), ``ctr task ps`` (containerd's own: the VM's host processes; ADR 0057), and ``ctr task
pause``/``resume`` (a paused VM makes no progress, and goes on after).

Two VMs for the module (seconds each under TCG): one reading stdin under no init-data (no
exec), one on a terminal under a policy with ``allow_exec``.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import pathlib
import pty
import select
import shutil
import subprocess
import tempfile
import termios
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
from tests.support.user_terminal import set_size
from tests.support.vm import RUNTIME, needs_vm, qemu_of

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (containerd_available() and registry_available()),
                       reason="needs root, containerd, ctr and docker-registry"),
    needs_vm(),
]

VM = ("--annotation", "io.arca.tee=vm")
RUN = uuid.uuid4().hex[:6]
BOOT = 300
ALLOW_EXEC = b"""version = "0.1.0"
algorithm = "sha384"

[data]
policy = '''
allow_exec = true
'''
"""
#: Every byte value, then random bytes: more than one chunk of the stdin relay (32 KiB).
DATA = bytes(range(256)) * 64 + os.urandom(150_000)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    from arca.host.simtee import client

    tmp = tmp_path_factory.mktemp("vm-ctr-io")
    short_run = tempfile.mkdtemp(prefix="avci-", dir="/tmp")  # unix socket paths stay short
    env_vars = {"ARCA_ROOT": str(tmp / "arca-root"), "ARCA_RUN": short_run}
    mp = pytest.MonkeyPatch()
    for k, v in env_vars.items():
        mp.setenv(k, v)
    layout = tmp / "layout"
    build_busybox_image(layout, "latest")
    try:
        with run_registry(tmp / "registry") as reg, \
                run_containerd(tmp / "ctrd", env=env_vars) as ctrd:
            image = push(f"{layout}:latest", reg.host, f"vmio{RUN}:latest")
            ctrd.pull_plain_http(image)
            ctrd.image = image  # type: ignore[attr-defined]
            ctrd.tmp = tmp  # type: ignore[attr-defined]
            yield ctrd
    finally:
        client.stop()
        mp.undo()
        shutil.rmtree(short_run, ignore_errors=True)


def assert_nothing_left(ctrd, cid: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        leftovers = {
            "qemu": qemu_of(cid),
            "processes": processes_of_container(ctrd, cid),
            "mounts": mounts_mentioning(f"/{cid}/") + mounts_mentioning(f"/{cid} "),
            "cgroups": cgroups_named(cid),
            "ctr": [c for c in ctrd.ctr("containers", "ls", "-q").stdout.split() if c == cid],
        }
        if not any(leftovers.values()):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"container {cid} left: {leftovers}")
        time.sleep(0.2)


def run_argv(ctrd, cid: str, *cmd: str, tty: bool = False, init: bytes | None = None
             ) -> list[str]:
    ann = list(VM)
    if init is not None:
        ann += ["--annotation", f"io.arca.init-data={base64.b64encode(init).decode()}"]
    return ctrd.ctr_argv("run", "--rm", *(["-t"] if tty else []), "--net-host",
                         *ctrd.run_args(RUNTIME), *ann, ctrd.image, cid, *cmd)


def read_until(fd: int, want: bytes, timeout: float = BOOT, got: bytes = b"") -> bytes:
    """Output of ``fd`` until ``want`` (CRs ignored: ctr leaves its own terminal cooked, so a
    terminal's lines end in CR CR LF, under plain runc too)."""
    deadline = time.monotonic() + timeout
    while want not in got.replace(b"\r", b""):
        left = deadline - time.monotonic()
        assert left > 0, f"{want!r} not seen; got {got[-2000:]!r}"
        if select.select([fd], [], [], min(left, 0.5))[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            assert chunk, f"end of output before {want!r}; got {got[-2000:]!r}"
            got += chunk
    return got


def hostile_exec(ctrd, cid: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    """What a hostile host can do without ``arca-runtime``'s policy check: have runc start the
    VMM's exec client in the container with a process of its choosing. The VMM relays it; only
    the guest stands between it and the TD."""
    process = {"args": args, "env": ["PATH=/bin:/usr/bin"], "cwd": "/",
               "user": {"uid": 0, "gid": 0}}
    client = {"args": ["/usr/bin/python3", "-I", "-S", "/arca-vmm/vmm.py", "exec",
                       json.dumps(process)],
              "env": ["PATH=/usr/bin:/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0},
              "terminal": False}
    pf = ctrd.tmp / f"hostile-{uuid.uuid4().hex[:6]}.json"
    pf.write_text(json.dumps(client))
    # the shim keeps runc state per namespace under --runc-root
    (root,) = [p.parent for p in ctrd.runc_root.glob(f"*/{cid}")]
    runc = shutil.which("runc")
    assert runc is not None
    return subprocess.run([runc, "--root", str(root), "exec", "--process", str(pf), cid],
                          capture_output=True, text=True, timeout=120)


def test_stdin_is_binary_safe_with_eof_and_a_forbidden_exec_is_refused_in_the_guest(
        world) -> None:
    cid = f"vmio{RUN}-cat"
    proc = subprocess.Popen(
        run_argv(world, cid, "sh", "-c", "echo ready >&2; cat; echo cat-exit:$? >&2; "
                 "if test -e /pwned; then echo PWNED >&2; fi"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    assert proc.stderr is not None
    try:
        read_until(proc.stderr.fileno(), b"ready\n")
        # the host's check: no init-data, no exec
        res = world.ctr("task", "exec", "--exec-id", "pwn", cid, "sh", "-c",
                        "echo PWNED; touch /pwned", check=False)
        assert res.returncode != 0, res.stdout
        assert "allow_exec" in res.stderr and "PWNED" not in res.stdout, res.stderr
        # forced past it: refused by the guest, against the policy it holds; nothing ran
        res = hostile_exec(world, cid, ["sh", "-c", "echo PWNED; touch /pwned"])
        assert res.returncode == 126, (res.stdout, res.stderr)
        assert "PWNED" not in res.stdout
        line = res.stderr.strip().splitlines()[-1]
        assert "exec refused in the TD" in line and "allow_exec" in line, res.stderr
        out, err = proc.communicate(DATA, timeout=BOOT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == DATA, f"{len(out)} bytes back of {len(DATA)}"
    assert b"cat-exit:0" in err and b"PWNED" not in err, err
    assert_nothing_left(world, cid)


def _on_terminal(argv: list[str], rows: int, cols: int) -> tuple[subprocess.Popen[bytes], int]:
    """``argv`` (ctr) on a new pseudo-terminal as its controlling terminal, as from a shell:
    ctr then follows the terminal's size (SIGWINCH) with the shim's console resize."""
    master, slave = pty.openpty()
    set_size(slave, rows, cols)

    def ctty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,  # noqa: PLW1509
                            start_new_session=True, preexec_fn=ctty)
    os.close(slave)
    return proc, master


def _cpu_ticks(pid: int) -> int:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_terminal_resize_exec_in_the_guest_and_pause(world) -> None:
    cid = f"vmio{RUN}-tty"
    proc, master = _on_terminal(run_argv(
        world, cid, "sh", "-c", "trap 'echo winch:$(stty size)' WINCH; echo size:$(stty size); "
        "i=0; while :; do i=$((i+1)); echo tick:$i; sleep 0.3; done", tty=True,
        init=ALLOW_EXEC), 33, 101)
    try:
        out = read_until(master, b"size:33 101\n")
        # resized after start: ctr resizes the shim's console, the VMM passes it on, the
        # guest kernel signals the workload
        fcntl.ioctl(master, termios.TIOCSWINSZ, b"\x28\x00\x78\x00\x00\x00\x00\x00")  # 40x120
        out = read_until(master, b"winch:40 120\n", 120, out)
        # exec: in the guest (its kernel, the TD's evidence), not the VMM's container
        res = world.ctr("task", "exec", "--exec-id", "e1", cid, "sh", "-c",
                        "uname -r; test -e /run/arca/evidence.json && echo in-td; "
                        "test -e /run/arca-vm || echo not-vmm; echo err >&2; exit 4",
                        check=False, timeout=BOOT)
        assert res.returncode == 4, res.stderr
        kernel, *rest = res.stdout.split()
        assert kernel != os.uname().release and rest == ["in-td", "not-vmm"], res.stdout
        assert res.stderr.strip() == "err"
        # ctr task ps is containerd's own (the runc shim lists the container's cgroup): the
        # VM's host side, VMM and QEMU; the guest's processes are arca top's (ADR 0057)
        ps = world.ctr("task", "ps", cid).stdout.splitlines()[1:]
        cmds = [pathlib.Path(f"/proc/{ln.split()[0]}/cmdline").read_bytes() for ln in ps]
        assert any(b"/arca-vmm/vmm.py" in c for c in cmds), cmds
        assert any(b"qemu-system" in c for c in cmds), cmds
        # exec -t: a terminal in the guest of ctr's size
        ex, ex_master = _on_terminal(world.ctr_argv(
            "task", "exec", "-t", "--exec-id", "e2", cid, "sh", "-c",
            "tty; sleep 1; stty size; exit 6"), 21, 77)
        try:
            got = read_until(ex_master, b"21 77\n", 120)
            assert got.lstrip().startswith(b"/dev/pts/"), got
            assert ex.wait(timeout=60) == 6
        finally:
            if ex.poll() is None:
                ex.kill()
                ex.wait()
            os.close(ex_master)
        # pause: QEMU frozen, no output, no CPU time; resume: it goes on where it stopped
        qemu = qemu_of(cid)
        assert len(qemu) == 1, qemu
        world.ctr("task", "pause", cid)
        assert "PAUSED" in world.ctr("task", "ls").stdout
        time.sleep(1)  # what was in flight is written
        while select.select([master], [], [], 0.2)[0]:
            out += os.read(master, 65536)
        last, cpu = out.rsplit(b"tick:", 1)[1].split(b"\r")[0], _cpu_ticks(qemu[0])
        assert last.isdigit(), out[-200:]
        assert not select.select([master], [], [], 4)[0], "a paused VM made progress"
        assert _cpu_ticks(qemu[0]) == cpu, "a paused QEMU ran"
        world.ctr("task", "resume", cid)
        read_until(master, b"tick:%d\n" % (int(last) + 1), 120)
        world.ctr("task", "kill", "-s", "SIGKILL", cid)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert_nothing_left(world, cid)
