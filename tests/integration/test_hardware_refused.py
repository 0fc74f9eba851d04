"""``io.arca.tee=tdx|snp`` on a host without the hardware, through real containerd
(``ctr run`` + ``arca-runtime``) and through ``arca run``: refused before anything starts, with
one line naming what this host lacks (the backend's ``check_host``, the same reason
``arca doctor`` gives first), and nothing left behind."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from arca.host import backends
from tests.integration.test_containerd_sim import RUNTIME, assert_nothing_left
from tests.support.containerd import containerd_available, ctr_world, mounts_mentioning
from tests.support.images import build_busybox_image
from tests.support.registry import registry_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (containerd_available() and registry_available()
                            and os.geteuid() == 0),
                       reason="needs root, containerd, ctr, runc and docker-registry"),
]
BIN = pathlib.Path(sys.executable).parent


def lacking(tee: str) -> str:
    """The first reason this host cannot run ``tee``; skip on a host that has the hardware."""
    problems = backends.get(tee).host_problems()
    if not problems:
        pytest.skip(f"this host can run {tee}")
    return problems[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("hw-refused")
    layout = tmp / "layout"
    build_busybox_image(layout, "latest")
    with ctr_world(tmp, layout, ("latest",)) as (ctrd, images, env):
        yield ctrd, images["latest"], layout, env


@pytest.mark.parametrize("tee", ["tdx", "snp"])
def test_refused_through_ctr_with_the_hosts_reason(world, tee):
    ctrd, image, _, _ = world
    reason = lacking(tee)
    cid = f"hw-{tee}"
    res = ctrd.ctr("run", "--rm", *ctrd.run_args(RUNTIME), "--annotation",
                   f"io.arca.tee={tee}", image, cid, "true", check=False)
    assert res.returncode != 0
    line = next(ln for ln in res.stderr.splitlines() if "OCI runtime create failed" in ln)
    assert f"TEE '{tee}' is not available on this host: {reason}" in line, res.stderr
    assert "Traceback" not in res.stderr
    ctrd.ctr("containers", "delete", cid, check=False)
    assert_nothing_left(ctrd, cid)


@pytest.mark.parametrize("tee", ["tdx", "snp"])
def test_refused_by_arca_run_before_anything_starts(world, tee):
    _, _, layout, env = world
    reason = lacking(tee)
    res = subprocess.run([str(BIN / "arca"), "run", "--rm", "--tee", tee,
                          f"oci:{layout}:latest", "true"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, **env.vars}, check=False)
    assert res.returncode == 125, res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert reason in res.stderr and f"--tee '{tee}'" in res.stderr
    containers = pathlib.Path(env.vars["ARCA_RUN"]) / "containers"
    assert not containers.exists() or list(containers.iterdir()) == []
    ps = subprocess.run([str(BIN / "arca"), "ps", "-a", "--json"], capture_output=True,
                        text=True, timeout=60, env={**os.environ, **env.vars}, check=False)
    if ps.returncode == 0 and ps.stdout.strip():
        assert json.loads(ps.stdout) == []
    assert mounts_mentioning(env.vars["ARCA_ROOT"]) == []
