"""A podman user's habits with real runc and the sim platform: exit codes 126/127, ``run``'s
``-e NAME``/``--env-file``/``-u``/``-w``/``--entrypoint``/``--read-only``/``--memory``/
``--cpus``/``--label``, ``kill``/``wait``, ``ps -q/--format``, ``inspect --format``,
``simtee status`` naming containers, and containers whose ``arca run`` was SIGKILLed."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.support.arca_run import ARCA, NEEDS_ROOT_RUNC_UMOCI, arca, image_world
from tests.support.images import build_busybox_image

pytestmark = [pytest.mark.integration, NEEDS_ROOT_RUNC_UMOCI]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    with image_world(tmp_path_factory, "podman", "arca-pm-", layout="app",
                     cmd=["sh", "-c", "echo hi"]) as (layout, env, _):
        res = arca(env, "image", "load", str(layout), "--tag", "v1")
        assert res.returncode == 0 and res.stdout.startswith("localhost/app:v1 "), res.stderr
        yield "app:v1", env


def test_exit_codes_as_podman(world: tuple[str, dict[str, str]]) -> None:
    image, env = world
    for tee in ("none", "sim"):
        res = arca(env, "run", "--rm", "--tee", tee, image, "sh", "-c", "exit 3")
        assert res.returncode == 3, res.stderr
        res = arca(env, "run", "--rm", "--tee", tee, image, "no-such-command")
        assert res.returncode == 127, (tee, res.stderr)
        res = arca(env, "run", "--rm", "--tee", tee, image, "/etc/passwd")
        assert res.returncode == 126, (tee, res.stderr)
        assert "Traceback" not in res.stderr
    assert json.loads(arca(env, "ps", "-a", "--json").stdout) == []

def test_exec_exit_codes_as_podman(world: tuple[str, dict[str, str]],
                                   tmp_path: pathlib.Path) -> None:
    """``arca exec``: 127 for a command not found, 126 for one that cannot be executed (not
    runc's 255), the command's own code otherwise (255 included); one line of why."""
    image, env = world
    init = tmp_path / "init.toml"
    init.write_text('version = "0.1.0"\nalgorithm = "sha384"\n[data]\n'
                    'policy = """\nallow_exec = true\n"""\n')
    for tee in ("none", "sim"):
        name = f"ex-{tee}"
        td = ["--init-data", str(init)] if tee != "none" else []
        res = arca(env, "run", "-d", "--name", name, "--tee", tee, *td, image, "sleep", "300")
        assert res.returncode == 0, res.stderr
        try:
            for cmd, code in ((["no-such-command"], 127), (["/etc/passwd"], 126),
                              (["sh", "-c", "exit 255"], 255), (["sh", "-c", "exit 4"], 4)):
                res = arca(env, "exec", name, *cmd)
                assert res.returncode == code, (tee, cmd, res.stderr)
                assert res.stderr.count("\n") == (1 if code in (126, 127) else 0), res.stderr
        finally:
            arca(env, "rm", "-f", name)


def test_run_flags(world: tuple[str, dict[str, str]], tmp_path: pathlib.Path) -> None:
    image, env = world
    envf = tmp_path / "env"
    envf.write_text("# comment\nFROM_FILE=1\nFROM_CALLER\n\n")
    caller = {**env, "FROM_CALLER": "c", "PLAIN": "p"}
    res = arca(caller, "run", "--rm", "--tee", "none", "--env-file", str(envf), "-e", "PLAIN",
               "-e", "UNSET_ONE", "-u", "1000:1000", "-w", "/tmp", image, "sh", "-c",
               'echo "$FROM_FILE $FROM_CALLER $PLAIN ${UNSET_ONE-unset}"; id -u; id -g; pwd')
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:4] == ["1 c p unset", "1000", "1000", "/tmp"]
    res = arca(env, "run", "--rm", "--tee", "sim", "--entrypoint", "echo", image, "a", "b")
    assert (res.returncode, res.stdout) == (0, "a b\n"), res.stderr
    res = arca(env, "run", "--rm", "--tee", "none", "--read-only", image, "sh", "-c",
               "touch /tmp/ok && ! touch /nope 2>/dev/null && echo ro")
    assert (res.returncode, res.stdout) == (0, "ro\n"), res.stderr
    res = arca(env, "run", "--rm", "--tee", "none", "-m", "1x", image, "true")
    assert res.returncode == 125 and res.stderr == (
        "arca: error: --memory '1x': expected a size such as 512m or 2g\n")


def test_limits_labels_kill_wait_ps_inspect(world: tuple[str, dict[str, str]]) -> None:
    image, env = world
    res = arca(env, "run", "-d", "--name", "lim", "--tee", "none", "--memory", "64m",
               "--cpus", "0.5", "--label", "tier=web", image, "sleep", "60")
    assert res.returncode == 0, res.stderr
    cid = res.stdout.strip()
    try:
        info = json.loads(arca(env, "inspect", "lim").stdout)
        assert info["labels"] == {"tier": "web"}
        cg = pathlib.Path(f"/proc/{info['pid']}/cgroup").read_text()
        mem = next(ln.split(":")[2] for ln in cg.splitlines()
                   if ln.split(":")[1] in ("memory", ""))
        for f, want in (("memory/" + mem.lstrip("/") + "/memory.limit_in_bytes", "67108864"),
                        (mem.lstrip("/") + "/memory.max", "67108864")):
            p = pathlib.Path("/sys/fs/cgroup") / f
            if p.exists():
                assert p.read_text().strip() == want
                break
        else:
            pytest.fail(f"no memory limit file for {mem}")
        (st,) = json.loads(arca(env, "stats", "--no-stream", "--json", "lim").stdout)
        assert (st["name"], st["memory_limit_bytes"], st["pids"]) == ("lim", 64 << 20, 1)
        assert st["memory_bytes"] > 0 and st["cpu_seconds"] >= 0
        assert json.loads(arca(env, "stats", "--format", "json", "lim").stdout)[0]["name"] == "lim"
        line = arca(env, "stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}} {{.MemUsage}}",
                    "lim").stdout
        assert line.startswith("lim 1 ") and line.rstrip().endswith(" / 67.1MB"), line
        top = arca(env, "top", "lim").stdout.splitlines()
        assert top[0].split() == ["PID", "PPID", "UID", "TIME", "COMMAND"]
        assert [ln.split()[0] for ln in top[1:]] == [str(info["pid"])]
        assert top[1].endswith("sleep 60")
        assert arca(env, "ps", "-q").stdout.split() == [cid[:12]]
        out = arca(env, "ps", "--format", "{{.ID}} {{.Names}} {{.Labels}} {{.State}}").stdout
        assert out == f"{cid[:12]} lim map[tier:web] running\n"
        table = arca(env, "ps", "--format", "table {{.Names}}\\t{{.Image}}").stdout
        assert table.splitlines()[0].split() == ["NAMES", "IMAGE"]
        # podman's ps filters and the rest of its everyday flags
        for flt, want in ((["name=^li"], [cid[:12]]), (["name=^nope"], []),
                          (["label=tier=web"], [cid[:12]]), (["label=tier"], [cid[:12]]),
                          (["label=tier=db"], []), (["status=running", "id=" + cid[:5]],
                                                    [cid[:12]]), (["status=exited"], [])):
            args = [a for f in flt for a in ("--filter", f)]
            assert arca(env, "ps", "-a", "-q", *args).stdout.split() == want, flt
        assert arca(env, "ps", "-q", "--no-trunc").stdout.split() == [cid]
        assert arca(env, "ps", "-l", "-q").stdout.split() == [cid[:12]]
        assert arca(env, "ps", "-n", "0", "-q").stdout == ""
        row = arca(env, "ps", "--noheading").stdout.splitlines()
        assert len(row) == 1 and row[0].startswith(cid[:12])
        bad = arca(env, "ps", "--filter", "colour=red")
        assert bad.returncode == 125 and bad.stderr.count("\n") == 1, bad.stderr
        assert arca(env, "inspect", "--format", "{{.State}} {{json .Labels}}",
                    "lim").stdout == 'running {"tier": "web"}\n'
        bad = arca(env, "inspect", "-f", "{{.Nope}}", "lim")
        assert bad.returncode == 125 and "no field 'Nope'" in bad.stderr
        waiter = subprocess.Popen([ARCA, "wait", "lim"], env=env, stdout=subprocess.PIPE,
                                  text=True)
        assert arca(env, "kill", "-s", "SIGKILL", "lim").returncode == 0
        assert waiter.communicate(timeout=30)[0] == "137\n"
        assert arca(env, "kill", "lim").returncode == 125  # not running any more
        # podman's inspect objects, as scripts use them
        got = arca(env, "inspect", "-f", "{{.State.Status}} {{.State.Running}} "
                   "{{.State.ExitCode}} {{.State.Pid}} {{.Config.Image}} "
                   "{{json .Config.Labels}}", "lim").stdout
        assert got == f'exited false 137 0 localhost/{image} {{"tier": "web"}}\n', got
        assert json.loads(arca(env, "inspect", "lim").stdout)["State"]["ExitCode"] == 137
    finally:
        arca(env, "rm", "-f", "lim")


def _wait_for(cond: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _tds(env: dict[str, str]) -> list[str]:
    out = json.loads(arca(env, "simtee", "status", "--json").stdout)
    return [td["td_id"] for td in out["tds"]]


def _run_rm_running(image: str, env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    """``arca run --rm --name NAME`` of a sleeping sim TD, returned once it runs."""
    proc = subprocess.Popen([ARCA, "run", "--rm", "--name", name, "--tee", "sim", image,
                             "sleep", "300"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def running() -> bool:
        r = arca(env, "inspect", name)
        return r.returncode == 0 and json.loads(r.stdout)["status"] == "running"

    try:
        _wait_for(running)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def test_sigkilled_run_rm_is_reaped_by_the_next_command(
        world: tuple[str, dict[str, str]]) -> None:
    image, env = world
    proc = _run_rm_running(image, env, "doomed")
    try:
        info = json.loads(arca(env, "inspect", "doomed").stdout)
        assert info["id"] in _tds(env)
        status = arca(env, "simtee", "status").stdout
        assert "doomed" in status and info["id"][:12] in status
        meas = arca(env, "ps", "--format", "{{.Names}} {{.Measurement}}").stdout.split()
        assert meas[0] == "doomed" and len(meas[1]) == 96 and meas[1] in status
        assert f"sim {meas[1][:12]}" in arca(env, "ps").stdout
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ps = json.loads(arca(env, "ps", "-a", "--json").stdout)
    assert [c for c in ps if c["name"] == "doomed"] == []
    assert info["id"] not in _tds(env)
    with pytest.raises(ProcessLookupError):
        os.kill(info["pid"], 0)


def test_name_of_a_sigkilled_run_rm_is_free_for_the_next_run(
        world: tuple[str, dict[str, str]]) -> None:
    """The next command may be the same ``arca run --name`` again (no ``ps`` between): it
    reaps the lost container holding the name, TD included, and runs."""
    image, env = world
    proc = _run_rm_running(image, env, "again")
    try:
        first = json.loads(arca(env, "inspect", "again").stdout)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    res = arca(env, "run", "--rm", "--name", "again", "--tee", "sim", image, "echo", "reused")
    assert (res.returncode, res.stdout) == (0, "reused\n"), res.stderr
    assert first["id"] not in _tds(env)
    with pytest.raises(ProcessLookupError):
        os.kill(first["pid"], 0)
    # a live holder keeps its name
    res = arca(env, "run", "-d", "--name", "held", "--tee", "none", image, "sleep", "300")
    assert res.returncode == 0, res.stderr
    try:
        res = arca(env, "run", "--rm", "--name", "held", "--tee", "none", image, "true")
        assert res.returncode == 125 and "already in use" in res.stderr, res.stderr
    finally:
        arca(env, "rm", "-f", "held")


def test_detached_container_with_killed_monitor_is_removed_without_force(
        world: tuple[str, dict[str, str]]) -> None:
    image, env = world
    res = arca(env, "run", "-d", "--name", "orphan", "--tee", "sim", image, "sleep", "300")
    assert res.returncode == 0, res.stderr
    info = json.loads(arca(env, "inspect", "orphan").stdout)
    os.kill(info["monitor_pid"], signal.SIGKILL)
    _wait_for(lambda: "monitor lost" in arca(env, "ps").stdout)
    rm = arca(env, "rm", "orphan")
    assert rm.returncode == 0, rm.stderr
    assert info["id"] not in _tds(env)
    with pytest.raises(ProcessLookupError):
        os.kill(info["pid"], 0)


def test_foreground_output_is_kept_for_logs(world: tuple[str, dict[str, str]]) -> None:
    image, env = world
    for tee in ("none", "sim"):
        res = arca(env, "run", "--name", f"fg-{tee}", "--tee", tee, image, "sh", "-c",
                   "echo to-out; echo to-err >&2; exit 4")
        assert (res.returncode, res.stdout, res.stderr) == (4, "to-out\n", "to-err\n")
        logs = arca(env, "logs", f"fg-{tee}")
        assert sorted(logs.stdout.splitlines()) == ["to-err", "to-out"], logs.stderr
        assert arca(env, "rm", f"fg-{tee}").returncode == 0
    # a reader that stops early does not lose the log
    res = subprocess.run(f"{ARCA} run --name fg-pipe --tee none {image} sh -c "
                         "'i=0; while [ $i -lt 5000 ]; do echo line $i; i=$((i+1)); done'"
                         " | head -1", shell=True, env=env, capture_output=True, text=True)
    assert res.stdout == "line 0\n"
    assert len(arca(env, "logs", "fg-pipe").stdout.splitlines()) == 5000
    assert arca(env, "logs", "--tail", "2", "fg-pipe").stdout == "line 4998\nline 4999\n"
    assert arca(env, "logs", "--tail", "0", "fg-pipe").stdout == ""
    assert arca(env, "logs", "--tail=1", "-f", "fg-pipe").stdout == "line 4999\n"
    assert arca(env, "rm", "fg-pipe").returncode == 0


def test_start_and_restart_keep_the_rootfs_and_measure_again(
        world: tuple[str, dict[str, str]]) -> None:
    image, env = world
    for tee in ("none", "sim"):
        name = f"again-{tee}"
        res = arca(env, "run", "--name", name, "--tee", tee, image, "sh", "-c",
                   "echo run >> /count; wc -l < /count")
        assert (res.returncode, res.stdout.strip()) == (0, "1"), res.stderr
        assert arca(env, "start", name).returncode == 0
        assert arca(env, "wait", name).stdout == "0\n"
        assert arca(env, "logs", name).stdout.split() == ["1", "2"]
        assert arca(env, "rm", name).returncode == 0
    res = arca(env, "run", "-d", "--name", "svc", "--tee", "sim", image, "sleep", "100")
    assert res.returncode == 0, res.stderr
    try:
        before = json.loads(arca(env, "inspect", "svc").stdout)
        res = arca(env, "restart", "-t", "1", "svc")
        assert res.returncode == 0, res.stderr
        after = json.loads(arca(env, "inspect", "svc").stdout)
        assert after["status"] == "running" and after["pid"] != before["pid"]
        assert after["id"] in _tds(env)
    finally:
        arca(env, "rm", "-f", "svc")
    assert arca(env, "start", "no-such").returncode == 125


def test_non_root_run_is_told_what_needs_root(tmp_path: pathlib.Path) -> None:
    """A user who is not root: ``arca image load`` into a store of their own works; ``arca
    run`` is refused in one line saying what needs root and why, and leaves nothing behind
    (before: 'unmount ... failed' from the clean-up, masking the cause, and a half-made
    container directory)."""
    import shutil
    import sys
    import tempfile

    home = pathlib.Path(tempfile.mkdtemp(prefix="arca-nonroot-", dir="/tmp"))
    try:
        build_busybox_image(home / "app", "v1", cmd=["true"])
        for p in [home, *home.rglob("*")]:
            os.chown(p, 65534, 65534, follow_symlinks=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARCA_")}
        env.update(ARCA_ROOT=str(home / "root"), ARCA_RUN=str(home / "run"))

        def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534",
                                   "--clear-groups", sys.executable, "-m", "arca.cli.main",
                                   *argv], env=env, capture_output=True, text=True, cwd="/",
                                  timeout=120)

        res = as_nobody("image", "load", str(home / "app"), "--tag", "v1")
        assert res.returncode == 0, res.stderr
        for tee in ("none", "sim"):
            res = as_nobody("run", "--rm", "--tee", tee, "app:v1")
            assert res.returncode == 125, res.stderr
            assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
            assert "Operation not permitted (containers need root" in res.stderr, res.stderr
            assert sorted(os.listdir(home / "root" / "containers")) == ["lock", "names.json"]
    finally:
        shutil.rmtree(home, ignore_errors=True)
