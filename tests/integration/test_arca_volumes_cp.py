"""podman's named volumes, ``cp``, ``--restart`` and ``attach`` with real runc and the sim
platform (issue 15): what a podman user types, and the attacks on each (a container's symlink
must not reach the host through ``cp``; a TD's measured policy decides its volumes, ``cp`` into
or out of it)."""

from __future__ import annotations

import io
import json
import os
import pathlib
import signal
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator

import pytest

from tests.support.arca_run import ARCA, NEEDS_ROOT_RUNC_UMOCI, arca, image_world

pytestmark = [pytest.mark.integration, NEEDS_ROOT_RUNC_UMOCI]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    with image_world(tmp_path_factory, "volcp", "arca-vc-", layout="vapp",
                     cmd=["sh", "-c", "echo hi"]) as (layout, env, _):
        res = arca(env, "image", "load", str(layout), "--tag", "v1")
        assert res.returncode == 0, res.stderr
        yield "vapp:v1", env


def test_named_volumes(world: tuple[str, dict[str, str]], tmp_path: pathlib.Path) -> None:
    image, env = world
    # `run -v NAME:DST` creates a missing volume; its content outlives the container
    res = arca(env, "run", "--rm", "--tee", "none", "-v", "vdata:/data", image, "sh", "-c",
               "echo kept > /data/f")
    assert res.returncode == 0, res.stderr
    # in a TD too (the generated init-data allows exactly this destination), read-only
    res = arca(env, "run", "--rm", "--tee", "sim", "-v", "vdata:/data:ro", image, "sh", "-c",
               "cat /data/f; touch /data/g 2>/dev/null || echo read-only")
    assert (res.returncode, res.stdout) == (0, "kept\nread-only\n"), res.stderr
    assert arca(env, "volume", "ls", "-q").stdout.split() == ["vdata"]
    mp = arca(env, "volume", "inspect", "--format", "{{.Mountpoint}}", "vdata").stdout.strip()
    root = pathlib.Path(env["ARCA_ROOT"]) / "volumes"
    assert mp == str(root / "vdata" / "_data") and (root / "vdata/_data/f").read_text() == "kept\n"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700  # root-only store (ADR 0028)
    info = json.loads(arca(env, "volume", "inspect", "vdata").stdout)[0]
    assert (info["Name"], info["Driver"]) == ("vdata", "local")
    # used by a container, even an exited one: rm refused, prune keeps it
    res = arca(env, "run", "--name", "vuser", "--tee", "none", "-v", "vdata:/data", image, "true")
    assert res.returncode == 0, res.stderr
    res = arca(env, "volume", "rm", "vdata")
    assert res.returncode != 0 and "in use by container(s) vuser" in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1
    assert arca(env, "volume", "create", "vempty").stdout == "vempty\n"
    assert arca(env, "volume", "create", "vempty").returncode != 0  # exists
    assert arca(env, "volume", "prune", "-f").stdout == "vempty\n"
    assert arca(env, "volume", "ls", "-q").stdout.split() == ["vdata"]
    assert arca(env, "rm", "vuser").returncode == 0
    assert arca(env, "volume", "rm", "vdata").stdout == "vdata\n"
    assert not (root / "vdata").exists()
    # a bad name is one line, and nothing is left
    res = arca(env, "run", "--rm", "--tee", "none", "-v", "a@b:/x", image, "true")
    assert res.returncode != 0 and "invalid volume name 'a@b'" in res.stderr, res.stderr
    assert json.loads(arca(env, "ps", "-a", "--json").stdout) == []


def test_volume_in_a_td_obeys_the_measured_policy(world: tuple[str, dict[str, str]],
                                                   tmp_path: pathlib.Path) -> None:
    """A TD's volumes are bind mounts like -v HOST:DST: a destination its measured init-data
    does not allow is refused before anything runs (docs/threat-model.md §3)."""
    image, env = world
    from arca.host.containers.spec import generated_init_data

    tenant = tmp_path / "init.toml"
    tenant.write_bytes(generated_init_data(None, ["/allowed"]))
    res = arca(env, "run", "--rm", "--tee", "sim", "--init-data", str(tenant), "-v",
               "vpol:/conf", image, "echo", "ran")
    assert res.returncode != 0 and "ran" not in res.stdout, res.stdout
    assert "at '/conf'" in res.stderr and "policy.allow_mounts" in res.stderr, res.stderr
    res = arca(env, "run", "--rm", "--tee", "sim", "--init-data", str(tenant), "-v",
               "vpol:/allowed", image, "sh", "-c", "echo ok > /allowed/x && echo ran")
    assert (res.returncode, res.stdout) == (0, "ran\n"), res.stderr
    assert arca(env, "volume", "rm", "vpol").returncode == 0


def _wait_for(env: dict[str, str], name: str, path: str) -> None:
    deadline = time.monotonic() + 60
    while arca(env, "exec", name, "test", "-e", path).returncode != 0:
        assert time.monotonic() < deadline, arca(env, "logs", name).stdout
        time.sleep(0.1)


def test_cp_both_ways_and_symlinks_never_reach_the_host(world: tuple[str, dict[str, str]],
                                                         tmp_path: pathlib.Path) -> None:
    image, env = world
    hostdir = pathlib.Path(tempfile.mkdtemp(prefix="arca-cp-hostdir-"))
    host_shadow = pathlib.Path("/etc/shadow").read_bytes()
    # the container plants symlinks toward the host's files and directories
    plant = (f"echo container-shadow > /etc/shadow; mkdir -p /d/sub; echo one > /d/a; "
             f"echo two > /d/sub/b; ln -s a /d/rel; ln -s /etc/shadow /x; "
             f"ln -s ../../../../../../etc/shadow /y; ln -s {hostdir} /hostlink; "
             f"touch /ready; sleep 300")
    assert arca(env, "run", "-d", "--name", "cpbox", "--tee", "none", image, "sh", "-c",
                plant).returncode == 0
    try:
        _wait_for(env, "cpbox", "/ready")
        for link in ("/x", "/y"):  # resolved in the container's root: its file, not ours
            out = tmp_path / f"out{link[1:]}"
            res = arca(env, "cp", f"cpbox:{link}", str(out))
            assert res.returncode == 0, res.stderr
            assert out.read_bytes() == b"container-shadow\n" != host_shadow
        # into a symlink to a host directory: lands in the container's namesake, not ours
        src = tmp_path / "f.txt"
        src.write_text("copied in\n")
        assert arca(env, "cp", str(src), "cpbox:/hostlink").returncode == 0
        # (now a file in the container: asked for as a directory, it is refused)
        res = arca(env, "cp", str(src), "cpbox:/../../..//hostlink/")
        assert res.returncode != 0 and "not a directory" in res.stderr, res.stderr
        assert list(hostdir.iterdir()) == []
        assert arca(env, "exec", "cpbox", "cat", str(hostdir)).stdout == "copied in\n"
        # directories, recursively; symlinks inside copied as symlinks
        res = arca(env, "cp", "cpbox:/d", str(tmp_path / "d"))
        assert res.returncode == 0, res.stderr
        assert (tmp_path / "d/a").read_text() == "one\n"
        assert (tmp_path / "d/sub/b").read_text() == "two\n"
        assert os.readlink(tmp_path / "d/rel") == "a"
        (tmp_path / "in/deep").mkdir(parents=True)
        (tmp_path / "in/deep/c").write_text("three\n")
        assert arca(env, "cp", str(tmp_path / "in"), "cpbox:/d/").returncode == 0
        assert arca(env, "exec", "cpbox", "cat", "/d/in/deep/c").stdout == "three\n"
        # tar streams with -
        res = subprocess.run([ARCA, "cp", "cpbox:/d/sub", "-"], env=env, capture_output=True,
                             timeout=60)
        assert res.returncode == 0, res.stderr
        with tarfile.open(fileobj=io.BytesIO(res.stdout)) as tar:
            assert sorted(tar.getnames()) == ["sub", "sub/b"]
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo("t.txt")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"tar\n"))
        res = subprocess.run([ARCA, "cp", "-", "cpbox:/d"], env=env, input=buf.getvalue(),
                             capture_output=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert arca(env, "exec", "cpbox", "cat", "/d/t.txt").stdout == "tar\n"
        # a stopped container: its overlay mounted for the copy, and unmounted after
        assert arca(env, "stop", "-t", "1", "cpbox").returncode == 0
        assert arca(env, "cp", str(src), "cpbox:/d/stopped").returncode == 0
        res = arca(env, "cp", "cpbox:/d/stopped", str(tmp_path / "back"))
        assert res.returncode == 0 and (tmp_path / "back").read_text() == "copied in\n"
        res = arca(env, "cp", "cpbox:/y", str(tmp_path / "y2"))
        assert res.returncode == 0 and (tmp_path / "y2").read_bytes() == b"container-shadow\n"
        assert "/cp-" not in pathlib.Path("/proc/self/mountinfo").read_text()
        res = arca(env, "cp", "cpbox:/nope", str(tmp_path / "n"))
        assert res.returncode != 0 and "/nope: no such file" in res.stderr
        assert res.stderr.count("\n") == 1 and not (tmp_path / "n").exists()
        assert list(hostdir.iterdir()) == []
    finally:
        arca(env, "rm", "-f", "cpbox")
        hostdir.rmdir()
    assert pathlib.Path("/etc/shadow").read_bytes() == host_shadow


def test_cp_and_a_td_is_refused(world: tuple[str, dict[str, str]],
                                tmp_path: pathlib.Path) -> None:
    image, env = world
    assert arca(env, "run", "--name", "tdcp", "--tee", "sim", image, "true").returncode == 0
    try:
        for args in (["tdcp:/etc/hostname", str(tmp_path / "h")],
                     [str(pathlib.Path(__file__)), "tdcp:/tmp/"]):
            res = arca(env, "cp", *args)
            assert res.returncode != 0 and "runs in a TD" in res.stderr, res.stderr
            assert res.stderr.count("\n") == 1
        assert not (tmp_path / "h").exists()
    finally:
        arca(env, "rm", "-f", "tdcp")


def _inspect(env: dict[str, str], name: str) -> dict:  # type: ignore[type-arg]
    res = arca(env, "inspect", name)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def _until(cond, what: str, timeout: float = 90):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return got


def test_restart_policies(world: tuple[str, dict[str, str]]) -> None:
    image, env = world
    # on-failure:2: run, then twice more, then it stays exited with its code
    res = arca(env, "run", "-d", "--name", "rf", "--restart", "on-failure:2", "--tee", "none",
               image, "sh", "-c", "echo run >> /count; wc -l < /count; exit 3")
    assert res.returncode == 0, res.stderr
    info = _until(lambda: (i := _inspect(env, "rf"))["RestartCount"] == 2
                  and i["status"] == "exited" and i, "two restarts")
    assert info["exit_code"] == 3
    time.sleep(1.5)  # more than the next back-off: no third restart
    assert _inspect(env, "rf")["RestartCount"] == 2
    assert arca(env, "logs", "rf").stdout.split() == ["1", "2", "3"]
    assert "restarted 2 times" in arca(env, "ps", "-a").stdout
    assert arca(env, "ps", "-a", "--format", "{{.Names}} {{.Restarts}}").stdout.split(
        "\n").count("rf 2") == 1
    assert arca(env, "rm", "rf").returncode == 0
    # always, in a TD: each run a new TD, measured again; `arca stop` is not undone
    res = arca(env, "run", "-d", "--name", "ra", "--restart", "always", "--tee", "sim", image,
               "sh", "-c", "echo run >> /count; sleep 2")
    assert res.returncode == 0, res.stderr
    try:
        first = _inspect(env, "ra")["pid"]
        # running again, registered as a TD again (the runtime measured it at create)
        info = _until(lambda: (i := _inspect(env, "ra"))["RestartCount"] >= 1
                      and i["status"] == "running" and i["id"] in _tds(env) and i,
                      "a restart in a new TD")
        assert info["pid"] != first
        assert arca(env, "stop", "-t", "1", "ra").returncode == 0
        stopped = _inspect(env, "ra")
        assert stopped["status"] in ("exited", "error")
        time.sleep(2.5)
        after = _inspect(env, "ra")
        assert (after["status"], after["RestartCount"]) == (stopped["status"],
                                                            stopped["RestartCount"])
        assert info["id"] not in _tds(env)
    finally:
        arca(env, "rm", "-f", "ra")
    for bad in (["--restart", "sometimes", "-d"], ["--restart", "always"],
                ["--restart", "always", "-d", "--rm"], ["--restart", "no:3", "-d"]):
        res = arca(env, "run", *bad, "--tee", "none", image, "true")
        assert res.returncode != 0 and "--restart" in res.stderr, res.stderr
        assert res.stderr.count("\n") == 1
    assert json.loads(arca(env, "ps", "-a", "--json").stdout) == []


def _attached(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """Once ``arca attach`` holds the container's log open, it follows it and relays
    signals (it opens the log after installing its handlers)."""
    def holds_log() -> bool:
        fds = pathlib.Path(f"/proc/{proc.pid}/fd")
        try:
            return any(os.readlink(fd).endswith("/container.log") for fd in fds.iterdir())
        except OSError:
            return False
    _until(holds_log, "arca attach follows the log")


def _tds(env: dict[str, str]) -> list[str]:
    out = json.loads(arca(env, "simtee", "status", "--json").stdout)
    return [td["td_id"] for td in out["tds"]]


def test_attach_streams_until_exit_with_its_code(world: tuple[str, dict[str, str]]) -> None:
    image, env = world
    script = ("echo before; while [ ! -e /trig/go ]; do sleep 0.1; done; echo after; "
              "echo err >&2; exit 5")
    for tee in ("none", "sim"):
        name, vol = f"att-{tee}", f"vatt-{tee}"
        assert arca(env, "run", "-d", "--name", name, "--tee", tee, "-v", f"{vol}:/trig",
                    image, "sh", "-c", script).returncode == 0
        try:
            _until(lambda: "before" in arca(env, "logs", name).stdout,  # noqa: B023
                   "its first line")
            proc = subprocess.Popen([ARCA, "attach", name], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            _attached(proc)  # it follows the log from its end
            mp = arca(env, "volume", "inspect", "-f", "{{.Mountpoint}}", vol).stdout.strip()
            pathlib.Path(mp, "go").touch()
            out, err = proc.communicate(timeout=60)
            assert (proc.returncode, out) == (5, "after\nerr\n"), err
        finally:
            arca(env, "rm", "-f", name)
            arca(env, "volume", "rm", vol)
    # Ctrl-C on attach reaches the container (podman's --sig-proxy)
    assert arca(env, "run", "-d", "--name", "att-sig", "--tee", "none", image, "sh", "-c",
                "trap 'echo got-int; exit 7' INT; echo ready; "
                "while :; do sleep 0.1; done").returncode == 0
    try:
        _until(lambda: "ready" in arca(env, "logs", "att-sig").stdout, "its trap")
        proc = subprocess.Popen([ARCA, "attach", "att-sig"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        _attached(proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert (proc.returncode, out) == (7, "got-int\n"), err
    finally:
        arca(env, "rm", "-f", "att-sig")
    res = arca(env, "attach", "no-such")
    assert res.returncode != 0 and "no such container" in res.stderr


def test_attach_stdin_of_a_detached_interactive_container(
        world: tuple[str, dict[str, str]]) -> None:
    """``run -d -i`` keeps the container's stdin open for ``attach`` (as podman); one
    client's end of input is not the container's: the next attach still writes to it."""
    image, env = world
    for tee in ("none", "sim"):
        name = f"att-in-{tee}"
        res = arca(env, "run", "-d", "-i", "--name", name, "--tee", tee, image, "sh", "-c",
                   "echo ready; read a; echo got:$a; read b; echo got:$b; exit 4")
        assert res.returncode == 0, res.stderr
        try:
            _until(lambda: "ready" in arca(env, "logs", name).stdout,  # noqa: B023
                   "it waits for input")
            first = subprocess.Popen([ARCA, "attach", name], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert first.stdin is not None
            first.stdin.write(b"one\n")
            first.stdin.close()  # its end of input: the container's stdin stays open
            _until(lambda: "got:one" in arca(env, "logs", name).stdout,  # noqa: B023
                   "the first line arrived")
            second = subprocess.run([ARCA, "attach", name], env=env, input=b"two\n",
                                    capture_output=True, timeout=60)
            assert (second.returncode, second.stdout) == (4, b"got:two\n"), second.stderr
            assert first.wait(timeout=60) == 4 and first.stdout is not None
            assert first.stdout.read() == b"got:one\ngot:two\n"
            assert arca(env, "logs", name).stdout == "ready\ngot:one\ngot:two\n"
        finally:
            arca(env, "rm", "-f", name)
