"""``arca run`` and friends through both front ends (the lean parser and typer, forced with
ARCA_CLI_FASTPATH=0): same output, exit codes and cleanup. test_arca_run_basics covers the
behaviour in depth (through the lean parser, which the common forms take)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.arca_run import NEEDS_ROOT_RUNC_UMOCI, image_world
from tests.support.arca_run import arca as run_arca

pytestmark = [pytest.mark.integration, NEEDS_ROOT_RUNC_UMOCI]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with image_world(tmp_path_factory, "fastpath", "afp-",
                     env=["GREETING=hello"]) as (layout, env, tmp):
        yield f"oci:{layout}:v1", env, tmp


def arca(env: dict[str, str], fast: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_arca({**env, "ARCA_CLI_FASTPATH": fast}, *args)


@pytest.mark.parametrize("tee", ["none", "sim"])
def test_foreground_run_is_the_same_through_both(world, tee: str) -> None:  # type: ignore[no-untyped-def]
    image, env, tmp = world
    vol = tmp / "vol"
    vol.mkdir(exist_ok=True)
    (vol / "f").write_text("from-host")
    results = [arca(env, fast, "run", "--rm", "--tee", tee, "-e", "X=1", "-v",
                    f"{vol}:/v:ro", image, "sh", "-c", 'echo $GREETING $X; cat /v/f; exit 7')
               for fast in ("1", "0")]
    for res in results:
        assert (res.returncode, res.stdout, res.stderr) == (7, "hello 1\nfrom-host", ""), res
    assert json.loads(arca(env, "1", "ps", "-a", "--json").stdout) == []


def test_detached_lifecycle_through_typer(world) -> None:  # type: ignore[no-untyped-def]
    image, env, _ = world
    res = arca(env, "0", "run", "-d", "--tee", "none", "--name", "slow", image,
               "sh", "-c", "echo up; exec sleep 60")
    assert res.returncode == 0, res.stderr
    cid = res.stdout.strip()
    assert len(cid) == 64
    assert json.loads(arca(env, "0", "inspect", "slow").stdout)["id"] == cid
    ps = arca(env, "0", "ps").stdout
    assert "slow" in ps and " Up " in ps  # podman's STATUS words
    assert arca(env, "0", "stop", "-t", "5", "slow").stdout == "slow\n"
    assert arca(env, "0", "logs", "slow").stdout == "up\n"
    res = arca(env, "0", "rm", "slow")
    assert (res.returncode, res.stdout) == (0, "slow\n")
    res = arca(env, "0", "rm", "slow")
    assert res.returncode == 1 and res.stderr.startswith("arca: error: ")  # podman rm: 1, not there
