"""podman's named volumes, ``cp``, ``--restart`` and ``attach`` with real runc and the sim
platform (issue 15): what a podman user types, and the attacks on each (a container's symlink
must not reach the host through ``cp``; a TD's measured policy decides its volumes, ``cp`` into
or out of it)."""

from __future__ import annotations

import json
import pathlib
import stat
from collections.abc import Iterator

import pytest

from tests.support.arca_run import NEEDS_ROOT_RUNC_UMOCI, arca, arca_env
from tests.support.images import build_busybox_image

pytestmark = [pytest.mark.integration, NEEDS_ROOT_RUNC_UMOCI]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("volcp")
    layout = tmp / "vapp"
    build_busybox_image(layout, "v1", cmd=["sh", "-c", "echo hi"])
    with arca_env(tmp, "arca-vc-") as env:
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
