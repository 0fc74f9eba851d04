"""``arca pause``/``unpause`` as podman's, for every backend (real runc, the sim platform; the
``vm`` backend's are in ``test_vm_arca_io.py``): a paused container makes no progress and is
shown paused; unpaused, it goes on where it stopped; wrong states are one line; a paused
container can be removed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.support.arca_run import NEEDS_ROOT_RUNC_UMOCI, arca, image_world

pytestmark = [pytest.mark.integration, NEEDS_ROOT_RUNC_UMOCI]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    with image_world(tmp_path_factory, "pause", "arca-pz-", tag="latest") as (layout, env, _):
        yield f"oci:{layout}:latest", env


def _ticks(env: dict[str, str], name: str) -> list[str]:
    return [ln for ln in arca(env, "logs", name).stdout.split() if ln.startswith("tick:")]


def _wait_ticks(env: dict[str, str], name: str, n: int, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(ticks := _ticks(env, name)) < n:
        assert time.monotonic() < deadline, f"only {ticks}"
        time.sleep(0.1)
    return ticks


@pytest.mark.parametrize("tee", ["sim", "none"])
def test_pause_stops_progress_and_unpause_goes_on(world: tuple[str, dict[str, str]],
                                                  tee: str) -> None:
    image, env = world
    name = f"pz-{tee}"
    res = arca(env, "run", "-d", "--name", name, "--tee", tee, image, "sh", "-c",
               "i=0; while :; do i=$((i+1)); echo tick:$i; sleep 0.1; done")
    assert res.returncode == 0, res.stderr
    try:
        _wait_ticks(env, name, 2)
        res = arca(env, "pause", name)
        assert (res.returncode, res.stdout) == (0, f"{name}\n"), res.stderr
        (rec,) = json.loads(arca(env, "ps", "--json").stdout)
        assert rec["state"] == "paused"
        time.sleep(0.5)  # what was in flight is written
        before = _ticks(env, name)
        time.sleep(2)
        assert _ticks(env, name) == before, "a paused container made progress"
        res = arca(env, "pause", name)
        assert res.returncode != 0 and "already paused" in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
        res = arca(env, "unpause", name)
        assert res.returncode == 0, res.stderr
        after = _wait_ticks(env, name, len(before) + 2)
        assert after[len(before)] == f"tick:{int(before[-1][5:]) + 1}"
        (rec,) = json.loads(arca(env, "ps", "--json").stdout)
        assert rec["state"] == "running"
        res = arca(env, "unpause", name)
        assert res.returncode != 0 and "not paused" in res.stderr, res.stderr
        # paused, then removed: nothing stays frozen behind
        assert arca(env, "pause", name).returncode == 0
    finally:
        res = arca(env, "rm", "-f", name)
    assert res.returncode == 0, res.stderr
    assert json.loads(arca(env, "ps", "-a", "--json").stdout) == []
    res = arca(env, "pause", name)
    assert res.returncode != 0 and name in res.stderr and "Traceback" not in res.stderr
