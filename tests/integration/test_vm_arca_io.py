"""Issue 11, process semantics of the ``vm`` backend through ``arca run --tee vm``: stdin (``-i``,
binary, end of file), ``-t`` with the window size followed after start (SIGWINCH), ``arca exec``
run *inside the guest* and only as the TD's measured policy allows (the guest re-checks: an
exec forced past the host's check is refused in the TD), also with the command on
``arca-runtime exec``'s line, ``arca top`` listing the guest's processes only under a policy
with ``allow_exec`` (ADR 0057), and ``arca pause``/``unpause`` (a
paused VM makes no progress, and goes on after).

Three VMs for the module (seconds each under TCG): one reading stdin under a policy without
``allow_exec``, one interactive terminal, one detached ticker under a policy with it.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import time
import uuid

import pytest

from tests.support.arca_run import ARCA, NEEDS_ROOT_RUNC_UMOCI, arca, arca_env
from tests.support.containerd import mounts_mentioning
from tests.support.images import build_busybox_image
from tests.support.vm import RUNTIME, needs_vm, qemu_of, sockets_under, vm_images

pytestmark = [
    pytest.mark.integration,
    NEEDS_ROOT_RUNC_UMOCI,
    needs_vm(),
]

RUN = uuid.uuid4().hex[:6]
#: One VM boot under TCG with 8 engineers on 2 cores: generous, a wedged VM still fails.
BOOT = 300
ALLOW_EXEC = """version = "0.1.0"
algorithm = "sha384"

[data]
policy = '''
allow_exec = true
'''
"""
#: Every byte value, then random bytes: more than one chunk of the stdin relay (32 KiB).
DATA = bytes(range(256)) * 64 + os.urandom(150_000)


class World:
    def __init__(self, tmp: pathlib.Path, env: dict[str, str], layout: pathlib.Path) -> None:
        self.tmp, self.env, self.layout = tmp, env, layout
        self.allow_exec = tmp / "allow-exec.toml"
        self.allow_exec.write_text(ALLOW_EXEC)

    @property
    def image(self) -> str:
        return f"oci:{self.layout}:latest"

    def arca(self, *args: str, timeout: float = BOOT) -> subprocess.CompletedProcess[str]:
        return arca(self.env, *args, timeout=timeout)

    def cid(self, name: str) -> str:
        return str(json.loads(self.arca("inspect", name).stdout)["id"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("vm-io")
    layout = tmp / "layout"
    build_busybox_image(layout, "latest")
    with arca_env(tmp, "avio-") as env:
        yield World(tmp, env, layout)


def assert_nothing_left(w: World) -> None:
    run, root = pathlib.Path(w.env["ARCA_RUN"]), pathlib.Path(w.env["ARCA_ROOT"])
    deadline = time.monotonic() + 20
    while True:
        ps = json.loads(w.arca("ps", "-a", "--json").stdout or "[]")
        td = run / "td"
        leftovers = {
            "containers": [c["id"] for c in ps],
            "qemu": [p for c in ps for p in qemu_of(c["id"][:12])],
            "td_dirs": sorted(os.listdir(td)) if td.is_dir() else [],
            "sockets": [s for s in sockets_under(run) if "/simtee/" not in s],
            "mounts": mounts_mentioning(str(run) + "/") + mounts_mentioning(str(root) + "/c"),
            "images": [i for i in vm_images(root) if not i.startswith(("rootfs/", "initramfs/"))],
        }
        if not any(leftovers.values()):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"left behind: {leftovers}")
        time.sleep(0.2)


def read_until(fd: int, want: bytes, timeout: float = BOOT) -> bytes:
    import select

    got, deadline = b"", time.monotonic() + timeout
    while want not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"{want!r} not seen; got {got!r}"
        if select.select([fd], [], [], min(left, 0.5))[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"end of output before {want!r}; got {got!r}"
            got += chunk
    return got


def hostile_exec(w: World, cid: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    """What a hostile host can do without ``arca-runtime``'s policy check: have runc start the
    VMM's exec client in the container with a process of its choosing. The VMM relays it; only
    the guest stands between it and the TD."""
    process = {"args": args, "env": ["PATH=/bin:/usr/bin"], "cwd": "/",
               "user": {"uid": 0, "gid": 0}}
    client = {"args": ["/usr/bin/python3", "-I", "-S", "/arca-vmm/vmm.py", "exec",
                       json.dumps(process)],
              "env": ["PATH=/usr/bin:/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0},
              "terminal": False}
    pf = w.tmp / f"hostile-{uuid.uuid4().hex[:6]}.json"
    pf.write_text(json.dumps(client))
    runc = shutil.which("runc")
    assert runc is not None
    return subprocess.run([runc, "--root", os.path.join(w.env["ARCA_RUN"], "runc"), "exec",
                           "--process", str(pf), cid], capture_output=True, text=True,
                          timeout=120)


def test_stdin_is_binary_safe_with_eof_and_a_forbidden_exec_is_refused_in_the_guest(
        world: World) -> None:
    name = f"cat-{RUN}"
    proc = subprocess.Popen(
        [ARCA, "run", "--rm", "-i", "--name", name, "--tee", "vm", world.image, "sh", "-c",
         "echo ready >&2; cat; echo cat-exit:$? >&2; if test -e /pwned; then echo PWNED >&2; fi"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=world.env,
        bufsize=0)
    assert proc.stderr is not None
    try:
        read_until(proc.stderr.fileno(), b"ready\n")
        # the host's check: no init-data, no exec
        res = world.arca("exec", name, "sh", "-c", "echo PWNED; touch /pwned")
        assert res.returncode != 0, res.stdout
        assert "allow_exec" in res.stderr and "PWNED" not in res.stdout, res.stderr
        # forced past it: refused by the guest, against the policy it holds; nothing ran
        res = hostile_exec(world, world.cid(name), ["sh", "-c", "echo PWNED; touch /pwned"])
        assert res.returncode == 126, (res.stdout, res.stderr)
        assert "PWNED" not in res.stdout
        line = res.stderr.strip().splitlines()[-1]
        assert "exec refused in the TD" in line and "allow_exec" in line, res.stderr
        # arca top asks the guest directly (no host check on the way): the guest's process
        # list is metadata this TD's measured policy does not give the host (ADR 0057)
        res = world.arca("top", name)
        assert res.returncode == 125, res.stdout
        assert "process listing refused in the TD" in res.stderr, res.stderr
        assert "allow_exec" in res.stderr and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and "cat" not in res.stdout
        out, err = proc.communicate(DATA, timeout=BOOT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == DATA, f"{len(out)} bytes back of {len(DATA)}"
    assert b"cat-exit:0" in err and b"PWNED" not in err, err
    assert_nothing_left(world)


def test_terminal_follows_resizes_and_takes_input(world: World) -> None:
    from tests.support.user_terminal import (
        INTERACTIVE_SCRIPT,
        UserTerminal,
        check_interactive_session,
    )

    t = UserTerminal(world.env, "run", "--rm", "-t", "-i", "--tee", "vm", world.image, "sh",
                     "-c", INTERACTIVE_SCRIPT, rows=33, cols=101)
    try:
        t.read_until(b"33 101\r\n", timeout=BOOT)  # booted (the session's own steps are quick)
        check_interactive_session(t)
    finally:
        t.close()
    assert_nothing_left(world)


def _ticks(w: World, name: str) -> list[int]:
    out = w.arca("logs", name).stdout
    return [int(ln[5:]) for ln in out.split() if ln.startswith("tick:") and ln[5:].isdigit()]


def _cpu_ticks(pid: int) -> int:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_exec_runs_in_the_guest_and_pause_stops_the_vm(world: World) -> None:
    from tests.support.user_terminal import UserTerminal

    name = f"tick-{RUN}"
    res = world.arca("run", "-d", "--name", name, "--tee", "vm", "--init-data",
                     str(world.allow_exec), world.image, "sh", "-c",
                     "i=0; while :; do i=$((i+1)); echo tick:$i; sleep 0.2; done")
    assert res.returncode == 0, res.stderr
    try:
        deadline = time.monotonic() + BOOT
        while not _ticks(world, name):
            assert time.monotonic() < deadline, world.arca("logs", name).stderr
            time.sleep(0.5)
        # in the guest: its kernel, the TD's evidence; not the VMM's host-side container
        res = world.arca("exec", name, "sh", "-c", "uname -r; test -e /run/arca/evidence.json "
                         "&& echo in-td; test -e /run/arca-vm || echo not-vmm; echo err >&2; "
                         "exit 4")
        assert res.returncode == 4, res.stderr
        kernel, *rest = res.stdout.split()
        assert kernel != os.uname().release and rest == ["in-td", "not-vmm"], res.stdout
        assert res.stderr.strip() == "err"
        # arca top: the guest's processes as the guest sees them (ADR 0057), not the VMM's
        res = world.arca("top", name)
        assert res.returncode == 0, res.stderr
        head, *rows = res.stdout.splitlines()
        assert head.split() == ["PID", "PPID", "UID", "USER", "TIME", "COMMAND"], res.stdout
        procs = [r.split(None, 5) for r in rows]
        (workload,) = [p for p in procs if p[5].startswith("sh -c i=0; while")]
        assert workload[1:4] == ["1", "0", "root"], res.stdout  # under the guest's PID 1
        assert not any("qemu" in p[5] or "vmm.py" in p[5] for p in procs), res.stdout
        # runc exec with the command on the line (no --process), as podman-style callers
        # send it: the same exec in the guest, built from the container's own process
        cli = subprocess.run([RUNTIME, "--root", os.path.join(world.env["ARCA_RUN"], "runc"),
                              "exec", "--env", "X=on-the-line", world.cid(name), "sh", "-c",
                              "uname -r; test -e /run/arca/evidence.json && echo in-td; "
                              "echo $X; exit 5"],
                             capture_output=True, text=True, env=world.env, timeout=BOOT)
        assert cli.returncode == 5, cli.stderr
        assert cli.stdout.split() == [kernel, "in-td", "on-the-line"], cli.stdout
        # -i: binary stdin and its end
        got = subprocess.run([ARCA, "exec", "-i", name, "sh", "-c", "cat; echo eof:$?"],
                             input=DATA, capture_output=True, env=world.env, timeout=BOOT)
        assert got.returncode == 0, got.stderr
        assert got.stdout == DATA + b"eof:0\n", len(got.stdout)
        # -t -i: a terminal of the user's size, typed input
        t = UserTerminal(world.env, "exec", "-t", "-i", name, "sh", "-c",
                         "tty; stty size; read x; echo got:$x; exit 6", rows=21, cols=77)
        try:
            t.read_until(b"21 77\r\n", timeout=120)
            assert t.out.startswith(b"/dev/pts/"), t.out
            t.type(b"abc\r")
            t.read_until(b"got:abc\r\n")
            assert t.finish(timeout=60) == 6
        finally:
            t.close()
        # pause: the VMM's processes frozen, no output, no CPU time
        qemu = qemu_of(world.cid(name)[:12])
        assert len(qemu) == 1, qemu
        res = world.arca("pause", name)
        assert res.returncode == 0, res.stderr
        assert "Paused" in world.arca("ps").stdout  # podman's STATUS word
        time.sleep(1)  # what was in flight is written
        before, cpu = _ticks(world, name), _cpu_ticks(qemu[0])
        time.sleep(4)
        assert _ticks(world, name) == before, "a paused VM made progress"
        assert _cpu_ticks(qemu[0]) == cpu, "a paused QEMU ran"
        res = world.arca("unpause", name)
        assert res.returncode == 0, res.stderr
        deadline = time.monotonic() + 120
        while len(_ticks(world, name)) < len(before) + 3:
            assert time.monotonic() < deadline, "no progress after unpause"
            time.sleep(0.5)
        after = _ticks(world, name)
        assert after[len(before)] == before[-1] + 1, "it went on where it stopped"
        # a paused VM can be removed: nothing stays frozen behind
        assert world.arca("pause", name).returncode == 0
    finally:
        world.arca("rm", "-f", name)
    assert_nothing_left(world)
