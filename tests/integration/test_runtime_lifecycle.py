"""``arca-runtime`` driven directly with an OCI bundle and real runc (no containerd): crash
safety (``kill -9`` in the middle of ``create``) and leak-freedom over many cycles."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.support.containerd import cgroups_named, mounts_mentioning

#: Shared with the other runtime test modules.
NEEDS_ROOT_AND_RUNC = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"),
                                         reason="needs root + runc")
pytestmark = [pytest.mark.integration, NEEDS_ROOT_AND_RUNC]

RUNTIME = str(pathlib.Path(sys.executable).parent / "arca-runtime")
CYCLES = int(os.environ.get("ARCA_TEST_CYCLES", "200"))
#: Container ids are global on the host (cgroup paths): never reuse another run's.
RUN = uuid.uuid4().hex[:6]


def isolated_env(tmp: pathlib.Path) -> pytest.MonkeyPatch:
    """``ARCA_ROOT``/``ARCA_RUN`` under ``tmp`` and no ``ARCA_TEE``; ``undo`` restores."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ARCA_ROOT", str(tmp / "arca-root"))
    mp.setenv("ARCA_RUN", str(tmp / "arca-run"))
    mp.delenv("ARCA_TEE", raising=False)
    return mp


def busybox_rootfs(tmp: pathlib.Path) -> pathlib.Path:
    """A busybox rootfs, shared read-only by every bundle of a module."""
    rootfs = tmp / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    for applet in ("sh", "sleep", "true", "cat"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    # Mount points runc would otherwise create in the (shared) rootfs on first use.
    for d in ("proc", "dev", "sys", "run/arca", ".arca", "tmp"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    return rootfs


@contextlib.contextmanager
def runtime_session(tmp: pathlib.Path, mp: pytest.MonkeyPatch, *,
                    start_platform: bool = False) -> Iterator[Runtime]:
    """A :class:`Runtime` over a busybox rootfs; afterwards no container outlives the module,
    the sim platform is stopped and ``mp`` undone."""
    from arca.host.simtee import client

    runtime = Runtime(tmp, busybox_rootfs(tmp))
    try:
        if start_platform:
            client.ensure_running()
        yield runtime
    finally:
        # Whatever a failed test left behind: no container outlives the module.
        if runtime.runc_root.is_dir():
            for c in runtime.runc_root.iterdir():
                runtime.run("delete", "--force", c.name, check=False)
        client.stop()
        mp.undo()


@contextlib.contextmanager
def sim_runtime(tmp_path_factory: pytest.TempPathFactory, name: str, *,
                python_path: bool = False,
                runc_hook: Callable[[pathlib.Path], str] | None = None) -> Iterator[Runtime]:
    """A :class:`runtime_session` with the sim platform up, through the current C front end
    (``python_path``: a runtime config file sends every call to Python instead).
    ``runc_hook(tmp)``: shell that a wrapper of runc runs first, with runc's arguments in
    ``"$@"`` (``tmp``: the runtime's directory, for what it records)."""
    require_current_front_end()
    tmp = tmp_path_factory.mktemp(name)
    mp = isolated_env(tmp)
    if python_path:
        (tmp / "runtime.json").write_text("{}")
        mp.setenv("ARCA_RUNTIME_CONFIG", str(tmp / "runtime.json"))
    else:
        mp.delenv("ARCA_RUNTIME_CONFIG", raising=False)
    if runc_hook is not None:
        wrapper = tmp / "runc-wrapper"
        wrapper.write_text(f'#!/bin/sh\n{runc_hook(tmp)}exec runc "$@"\n')
        wrapper.chmod(0o755)
        mp.setenv("ARCA_RUNC", str(wrapper))
    with runtime_session(tmp, mp, start_platform=True) as runtime:
        yield runtime


def require_current_front_end() -> None:
    """Skip unless the installed C front end was built from these sources."""
    from arca.host.runtime.fastcreate import code_stamp

    if code_stamp().encode() not in pathlib.Path(RUNTIME).read_bytes():
        pytest.skip("installed arca-runtime front end is older than the sources: "
                    "run scripts/setup.sh")


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("rt")
    with runtime_session(tmp, isolated_env(tmp)) as runtime:
        yield runtime


class Runtime:
    def __init__(self, tmp: pathlib.Path, rootfs: pathlib.Path) -> None:
        self.tmp = tmp
        self.rootfs = rootfs
        self.runc_root = tmp / "runc"
        self.log = tmp / "log.json"

    def bundle(self, cid: str, args: list[str], tee: str | None = "sim",
               annotations: dict[str, str] | None = None) -> pathlib.Path:
        """A bundle directory named ``cid`` (shared rootfs, read-only)."""
        b = self.tmp / "bundles" / cid
        b.mkdir(parents=True, exist_ok=True)
        subprocess.run(["runc", "spec", "--bundle", str(b)], check=True)
        cfg = json.loads((b / "config.json").read_text())
        cfg["root"] = {"path": str(self.rootfs), "readonly": True}
        cfg["process"]["terminal"] = False
        cfg["process"]["args"] = args
        cfg["annotations"] = dict(annotations or {})
        if tee:
            cfg["annotations"]["io.arca.tee"] = tee
        (b / "config.json").write_text(json.dumps(cfg))
        return b

    def argv(self, *args: str) -> list[str]:
        return [RUNTIME, "--root", str(self.runc_root), "--log", str(self.log),
                "--log-format", "json", *args]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # Files, not pipes: a created container inherits the runtime's stdio and would keep
        # a pipe open until it exits.
        out, err = self.tmp / "stdout", self.tmp / "stderr"
        with open(out, "w") as o, open(err, "w") as e:
            proc = subprocess.run(self.argv(*args), stdout=o, stderr=e, timeout=60,
                                  stdin=subprocess.DEVNULL)
        res = subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(),
                                          err.read_text())
        if check and res.returncode != 0:
            log = self.log.read_text()[-1000:] if self.log.exists() else ""
            raise AssertionError(f"arca-runtime {' '.join(args)}: {res.returncode} {res.stderr}"
                                 f" log: {log}")
        return res


def leftovers(rt: Runtime, cid: str) -> dict[str, list[str]]:
    from arca.host.simtee import client, locations

    run = pathlib.Path(os.environ["ARCA_RUN"])
    return {
        "runc": [cid] if (rt.runc_root / cid).exists() else [],
        "state": [cid] if (run / "containers" / cid).exists() else [],
        "td_dir": [cid] if (run / "td" / cid).exists() else [],
        "registrations": [t["td_id"] for t in client.list_tds() if t["td_id"] == cid]
        if client.is_running() else [],
        "records": [p.name for p in locations.registrations_dir().glob(f"{cid}.json")],
        "cgroups": cgroups_named(cid),
        "processes": _processes_with_id(cid),
        "uid_range": _userns_slots_of(run / "containers" / cid),
    }


def _userns_slots_of(owner: pathlib.Path) -> list[str]:
    """Slots of the machine-wide uid-range registry still held for this container (its
    user namespace, ADR 0048)."""
    from arca.host.runtime import userns

    reg = pathlib.Path(userns.REGISTRY)
    return [p.name for p in reg.iterdir() if p.name.isdigit()
            and userns.owner_of(int(p.name)) == str(owner)] if reg.is_dir() else []


def kill_create_then_force_delete(rt: Runtime, cid: str, delay: float) -> None:
    """``kill -9`` the runtime ``delay`` seconds into ``create``; ``delete --force`` must
    then leave nothing behind."""
    b = rt.bundle(cid, ["sleep", "30"])
    proc = subprocess.Popen(rt.argv("create", "--bundle", str(b), cid),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rt.run("delete", "--force", cid)
    assert_clean(rt, cid)


def assert_clean(rt: Runtime, cid: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while any((left := leftovers(rt, cid)).values()):
        if time.monotonic() > deadline:
            pytest.fail(f"container {cid} left: {left}")
        time.sleep(0.05)


def _processes_with_id(cid: str) -> list[str]:
    out = []
    for p in pathlib.Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                args = (p / "cmdline").read_bytes().split(b"\0")
                cg = (p / "cgroup").read_text()
            except OSError:
                continue
            if cid.encode() in args or any(ln.endswith(f"/{cid}") for ln in cg.splitlines()):
                out.append(p.name)
    return out


def test_tee_container_runs_the_workload_in_its_td(rt: Runtime) -> None:
    out = rt.tmp / "out.txt"
    wl = f"wl-{RUN}"
    b = rt.bundle(wl, ["sh", "-c", "cat /run/arca/tee/descriptor.json"])
    with open(out, "wb") as f:
        res = subprocess.run(rt.argv("create", "--bundle", str(b), "--pid-file",
                                     str(rt.tmp / "wl.pid"), wl), stdout=f, stderr=f,
                             stdin=subprocess.DEVNULL, timeout=60)
    assert res.returncode == 0, out.read_text()
    pid = int((rt.tmp / "wl.pid").read_text())
    rt.run("start", wl)
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    desc = json.loads(out.read_text().strip().splitlines()[-1])
    assert desc["tee"] == "sim" and desc["process"]["args"] == ["sh", "-c",
                                                                "cat /run/arca/tee/descriptor.json"]
    state = json.loads(rt.run("state", wl).stdout)
    assert state["status"] == "stopped"
    rt.run("delete", wl)
    assert_clean(rt, wl)


ALLOW_EXEC = base64.b64encode(b'version = "0.1.0"\n[data]\npolicy = "allow_exec = true"\n').decode()


def test_exec_into_a_tee_container_is_delegated_when_policy_allows(rt: Runtime) -> None:
    ex = f"ex-{RUN}"
    b = rt.bundle(ex, ["sleep", "30"], annotations={"io.arca.init-data": ALLOW_EXEC})
    rt.run("create", "--bundle", str(b), ex)
    rt.run("start", ex)
    proc = rt.tmp / "proc.json"
    proc.write_text(json.dumps({"args": ["cat", "/run/arca/tee/process.json"], "cwd": "/",
                                "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}))
    res = rt.run("exec", "--process", str(proc), ex)
    assert json.loads(res.stdout)["args"] == ["sleep", "30"]
    rt.run("delete", "--force", ex)
    assert_clean(rt, ex)


def test_exec_without_policy_is_refused_in_one_line(rt: Runtime) -> None:
    ex = f"noex-{RUN}"
    b = rt.bundle(ex, ["sleep", "30"])
    rt.run("create", "--bundle", str(b), ex)
    rt.run("start", ex)
    proc = rt.tmp / "proc.json"
    proc.write_text(json.dumps({"args": ["sh"], "cwd": "/"}))
    res = rt.run("exec", "--process", str(proc), ex, check=False)
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "allow_exec" in res.stderr
    rt.run("delete", "--force", ex)
    assert_clean(rt, ex)


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2, 0.3])
def test_kill_9_during_create_then_delete_force_leaves_nothing(rt: Runtime, delay: float) -> None:
    kill_create_then_force_delete(rt, f"k9-{int(delay * 1000)}-{RUN}", delay)


def test_parallel_creates_start_exactly_one_daemon(rt: Runtime) -> None:
    from arca.host.simtee import client

    client.stop()  # every create below races to start the platform
    ids = [f"par{i}-{RUN}" for i in range(6)]
    procs = []
    try:
        for cid in ids:
            b = rt.bundle(cid, ["sleep", "30"])
            procs.append(subprocess.Popen(rt.argv("create", "--bundle", str(b), cid),
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        assert [p.wait(timeout=60) for p in procs] == [0] * len(ids)
        # Losers of the start race may still be starting up; they must all give way to one.
        deadline = time.monotonic() + 10
        while True:
            daemons = [p for p in pathlib.Path("/proc").iterdir() if p.name.isdigit()
                       and _is_our_daemon(p)]
            if len(daemons) == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(daemons) == 1
        assert int(daemons[0].name) == client.read_pid()
        assert sorted(t["td_id"] for t in client.list_tds()) == sorted(ids)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for cid in ids:
            rt.run("delete", "--force", cid, check=False)
    for cid in ids:
        assert_clean(rt, cid)


def _is_our_daemon(proc: pathlib.Path) -> bool:
    try:
        cmd = (proc / "cmdline").read_bytes()
        env = (proc / "environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"arca.host.simtee" in cmd and f"ARCA_RUN={os.environ['ARCA_RUN']}".encode() in env


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.slow
def test_many_cycles_leak_nothing(rt: Runtime) -> None:
    from arca.host.simtee import client

    b = rt.bundle("cyc", ["true"])
    config = (b / "config.json").read_bytes()

    def cycle(i: int) -> None:
        cid = f"cyc-{i}-{RUN}"
        (b / "config.json").write_bytes(config)  # create rewrites it in place
        rt.run("create", "--bundle", str(b), cid)
        rt.run("start", cid)
        rt.run("delete", "--force", cid)

    cycle(0)  # warm: daemon started, guest runtime built
    daemon = client.read_pid()
    assert daemon is not None
    # Only mounts that could be ours: the host's table also changes under parallel work.
    ours = (str(rt.tmp), f"-{RUN}", os.environ["ARCA_RUN"])
    fds, mounts = _fd_count(daemon), sum(len(mounts_mentioning(t)) for t in ours)
    for i in range(1, CYCLES + 1):
        cycle(i)
    assert client.read_pid() == daemon
    assert _fd_count(daemon) == fds
    assert sum(len(mounts_mentioning(t)) for t in ours) == mounts
    assert client.list_tds() == []
    run = pathlib.Path(os.environ["ARCA_RUN"])
    assert list((run / "containers").iterdir()) == []
    assert list((run / "td").iterdir()) == []
    assert [p for p in rt.runc_root.iterdir()] == []
    assert not any(cgroups_named(f"cyc-{i}-{RUN}") for i in range(0, CYCLES + 1, 17))
