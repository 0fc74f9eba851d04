"""``arca run`` and friends through both front ends (the lean parser and typer, forced with
ARCA_CLI_FASTPATH=0): same output, exit codes and cleanup. test_arca_run_basics covers the
behaviour in depth (through the lean parser, which the common forms take)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.support.images import build_busybox_image

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (shutil.which("runc") and shutil.which("umoci"))
                       or os.geteuid() != 0, reason="needs root, runc and umoci"),
]

ARCA = str(pathlib.Path(sys.executable).parent / "arca")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("fastpath")
    short_run = tempfile.mkdtemp(prefix="afp-", dir="/tmp")
    env = {**os.environ, "ARCA_ROOT": str(tmp / "root"), "ARCA_RUN": short_run}
    layout = tmp / "layout"
    build_busybox_image(layout, "v1", env=["GREETING=hello"])
    try:
        yield f"oci:{layout}:v1", env, tmp
    finally:
        for c in json.loads(arca(env, "1", "ps", "-a", "--json").stdout or "[]"):
            arca(env, "1", "rm", "-f", c["id"])
        subprocess.run([sys.executable, "-c", "from arca.host.simtee import client; "
                        "client.stop()"], env=env, capture_output=True)
        shutil.rmtree(short_run, ignore_errors=True)


def arca(env: dict[str, str], fast: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ARCA, *args], env={**env, "ARCA_CLI_FASTPATH": fast},
                          capture_output=True, text=True, timeout=120)


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
    assert "slow" in ps and "running" in ps
    assert arca(env, "0", "stop", "-t", "5", "slow").stdout == "slow\n"
    assert arca(env, "0", "logs", "slow").stdout == "up\n"
    res = arca(env, "0", "rm", "slow")
    assert (res.returncode, res.stdout) == (0, "slow\n")
    res = arca(env, "0", "rm", "slow")
    assert res.returncode == 1 and res.stderr.startswith("arca: error: ")
