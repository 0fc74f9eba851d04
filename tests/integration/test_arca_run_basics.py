"""``arca run`` without a daemon: exit codes, -e, -v, detached containers with logs/stop/rm,
--rm, exec, names; each container leaves no mount or TD behind once removed."""

from __future__ import annotations

import json
import pathlib
import time

import pytest

from tests.support.arca_run import NEEDS_ROOT_RUNC_UMOCI, arca, image_world

pytestmark = [pytest.mark.integration, NEEDS_ROOT_RUNC_UMOCI]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with image_world(tmp_path_factory, "run", "arr-",
                     env=["GREETING=hello"]) as (layout, env, tmp):
        yield f"oci:{layout}:v1", env, tmp


def mounts_under(path: str) -> list[str]:
    return [line for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines()
            if path in line]


@pytest.mark.parametrize("tee", ["sim", "none"])
def test_exit_code_env_and_output(world, tee: str) -> None:  # type: ignore[no-untyped-def]
    image, env, _ = world
    res = arca(env, "run", "--rm", "--tee", tee, "-e", "EXTRA=x1", "-e", "GREETING=hi", image,
               "sh", "-c", 'echo "$GREETING $EXTRA"; echo err >&2; exit 7')
    assert res.returncode == 7, res.stderr
    assert res.stdout == "hi x1\n"
    assert res.stderr == "err\n"
    assert json.loads(arca(env, "ps", "-a", "--json").stdout) == []
    assert mounts_under(env["ARCA_ROOT"] + "/containers") == []


def test_volumes_rw_and_ro(world, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    image, env, _ = world
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "in").write_text("from host\n")
    res = arca(env, "run", "--rm", "-v", f"{rw}:/data", "-v", f"{ro}:/conf:ro", image,
               "sh", "-c", "cat /conf/in; echo out > /data/out; echo x > /conf/no || exit 9")
    assert res.returncode == 9, res.stderr
    assert res.stdout == "from host\n"
    assert (rw / "out").read_text() == "out\n"
    assert not (ro / "no").exists()
    res = arca(env, "run", "--rm", "-v", "./relative-missing:/x", image, "true")
    assert res.returncode == 125 and "does not exist" in res.stderr
    assert "Traceback" not in res.stderr


def test_detached_logs_exec_stop_rm(world, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    image, env, _ = world
    script = 'echo started; trap "echo bye; exit 3" TERM; while true; do sleep 0.1; done'
    # exec into a TD needs a measured execution policy allowing it (issue 5).
    allow = tmp_path / "allow-exec.toml"
    allow.write_text('version = "0.1.0"\n[data]\npolicy = "allow_exec = true"\n')
    res = arca(env, "run", "-d", "--name", "svc", "--init-data", str(allow), image,
               "sh", "-c", script)
    assert res.returncode == 0, res.stderr
    cid = res.stdout.strip()
    assert len(cid) == 64
    # the CLI has exited; the container keeps running under its monitor
    ps = json.loads(arca(env, "ps", "--json").stdout)
    assert [(c["name"], c["state"]) for c in ps] == [("svc", "running")]
    deadline = time.monotonic() + 10
    while "started" not in arca(env, "logs", "svc").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ex = arca(env, "exec", "svc", "sh", "-c", "echo exec $GREETING; exit 4")
    assert (ex.returncode, ex.stdout) == (4, "exec hello\n"), ex.stderr
    dup = arca(env, "run", "-d", "--name", "svc", image, "true")
    assert dup.returncode == 125 and "already in use" in dup.stderr
    rm_running = arca(env, "rm", "svc")
    assert rm_running.returncode == 2 and "is running" in rm_running.stderr  # podman's 2
    both = arca(env, "rm", "nope", "svc")  # every one tried; the worst code
    assert both.returncode == 2 and both.stderr.count("\n") == 2, both.stderr
    assert arca(env, "rm", "-f", "nope").returncode == 0  # podman: -f ignores missing ones
    assert arca(env, "stop", "svc").returncode == 0
    info = json.loads(arca(env, "inspect", "svc").stdout)
    assert (info["status"], info["exit_code"]) == ("exited", 3)
    assert arca(env, "logs", "-f", "svc", timeout=20).stdout == "started\nbye\n"
    assert mounts_under(f"/containers/{cid}/") == []  # unmounted at exit
    assert arca(env, "rm", "svc").returncode == 0
    assert not (pathlib.Path(env["ARCA_ROOT"]) / "containers" / cid).exists()
    assert arca(env, "inspect", "svc").returncode == 125


def test_detached_rm_cleans_up_itself(world) -> None:  # type: ignore[no-untyped-def]
    image, env, _ = world
    res = arca(env, "run", "-d", "--rm", image, "sh", "-c", "sleep 0.3; exit 5")
    assert res.returncode == 0, res.stderr
    cid = res.stdout.strip()
    deadline = time.monotonic() + 20
    while (pathlib.Path(env["ARCA_ROOT"]) / "containers" / cid).exists():
        assert time.monotonic() < deadline, "auto-removed container still present"
        time.sleep(0.05)
    assert mounts_under(cid) == []


def test_missing_image_and_bad_tee(world) -> None:  # type: ignore[no-untyped-def]
    _, env, _ = world
    # (--pull never: by default arca run would try to pull it; test_arca_run_pull covers that)
    res = arca(env, "run", "--rm", "--pull", "never", "example.com/none:v1", "true")
    assert res.returncode == 125
    assert res.stderr.startswith("arca: error: image 'example.com/none:v1' is not in the store")
    res = arca(env, "run", "--tee", "tdx", "example.com/none:v1")
    # tdx is a backend now (issue 12): refused before any pull, naming what this host lacks
    assert res.returncode == 125 and "arca run supports sim" in res.stderr, res.stderr
    assert "none on this host (" in res.stderr and res.stderr.count("\n") == 1, res.stderr


def test_image_in_use_cannot_be_removed(world) -> None:  # type: ignore[no-untyped-def]
    image, env, _ = world
    res = arca(env, "run", "-d", "--tee", "none", "--name", "holder", image, "sleep", "30")
    assert res.returncode == 0, res.stderr
    cid = res.stdout.strip()
    try:
        name = json.loads(arca(env, "inspect", "holder").stdout)["image"]
        rm = arca(env, "image", "rm", name)
        assert rm.returncode == 2 and "used by container(s) holder" in rm.stderr  # podman's
        gone = arca(env, "rmi", "no-such-image:v9")
        assert gone.returncode == 1 and gone.stderr.count("\n") == 1, gone.stderr
        # forced: the record goes, but prune keeps the layers the running container mounts
        assert arca(env, "image", "rm", "--force", name).returncode == 0
        assert arca(env, "image", "prune").returncode == 0
        ex = arca(env, "exec", "holder", "cat", "/etc/group")
        assert ex.returncode == 0 and "app:x:1000:" in ex.stdout, ex.stderr
    finally:
        assert arca(env, "rm", "-f", "holder").returncode == 0
    assert mounts_under(cid) == []
    assert not (pathlib.Path(env["ARCA_ROOT"]) / "containers" / cid).exists()


def test_exec_refused_without_policy(world) -> None:  # type: ignore[no-untyped-def]
    """exec goes through arca-runtime, so the TD's execution policy applies: no init-data,
    no exec."""
    image, env, _ = world
    res = arca(env, "run", "-d", "--name", "noexec", image, "sleep", "30")
    assert res.returncode == 0, res.stderr
    try:
        ex = arca(env, "exec", "noexec", "sh", "-c", "echo should-not-run")
        assert ex.returncode == 1 and "execution policy" in ex.stderr, ex.stderr
        assert ex.stdout == ""
    finally:
        assert arca(env, "rm", "-f", "noexec").returncode == 0


def test_runtime_refusal_is_reported_and_leaves_no_mount(world, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    image, env, _ = world
    bad = tmp_path / "bad.toml"
    bad.write_text('version = "9.9"\n')
    res = arca(env, "run", "--name", "refused", "--init-data", str(bad), image, "true")
    assert res.returncode == 125
    assert "arca: error: container refused:" in res.stderr and "version" in res.stderr
    assert "Traceback" not in res.stderr
    info = json.loads(arca(env, "inspect", "refused").stdout)
    assert info["status"] == "error" and "version" in info["error"]
    assert mounts_under(info["id"]) == []
    assert arca(env, "rm", "refused").returncode == 0
    res = arca(env, "run", "--rm", "--init-data", str(bad), image, "true")
    assert res.returncode == 125
    assert [c for c in json.loads(arca(env, "ps", "-a", "--json").stdout)] == []
