"""The warm path of ``arca run`` (ADR 0006): the Nth run of an image imports none of the image
store's machinery, yet sees every change the slow path would see (re-tagged layouts, removed
images); ``--tee none`` stays without a TD whatever default TEE the runtime is configured
with."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.arca_run import NEEDS_ROOT_RUNC_UMOCI, arca, image_world
from tests.support.images import build_busybox_image

pytestmark = [pytest.mark.integration, NEEDS_ROOT_RUNC_UMOCI]
#: What the slow path needs and the warm path must not import (each costs milliseconds).
#: ``signal`` (and with it ``enum``) and ``json`` (with ``re``) are not among them: forwarding
#: signals needs :mod:`signal`, reading state needs :mod:`json`, and their private C halves are
#: not for Arca to use (ADR 0056).
HEAVY = ("dataclasses", "typing", "pathlib", "subprocess", "shutil", "datetime", "hashlib",
         "arca.host.images.store", "arca.host.images.ingest", "arca.host.imageconfig",
         "arca.host.paths", "typer", "socket", "selectors")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with image_world(tmp_path_factory, "warm", "arw-", env=["V=one"]) as (layout, env, tmp):
        env.pop("ARCA_TEE", None)
        yield layout, env, tmp


def test_warm_run_imports_nothing_heavy(world) -> None:  # type: ignore[no-untyped-def]
    layout, env, _ = world
    image = f"oci:{layout}:v1"
    cmd = ["run", "--rm", "--tee", "none", image, "true"]
    # The first run loads the layout into the store (images.json changes while it runs, so
    # what it found is not remembered); the second remembers; the third is warm.
    for _ in range(2):
        assert arca(env, *cmd).returncode == 0
    code = ("import sys\nfrom arca.cli.main import main\ntry:\n"
            f"    main({cmd!r})\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.stdout.strip().splitlines()[-1:] == ["[]"], res.stdout + res.stderr


def test_warm_run_sees_a_retagged_layout_and_a_removed_image(world) -> None:  # type: ignore[no-untyped-def]
    layout, env, tmp = world
    image = f"oci:{layout}:v2"
    build_busybox_image(layout, "v2", env=["V=first"])
    for _ in range(2):
        res = arca(env, "run", "--rm", "--tee", "none", image, "sh", "-c", "echo $V")
        assert (res.returncode, res.stdout) == (0, "first\n"), res.stderr
    build_busybox_image(layout, "v2", env=["V=second"])  # same tag, other image
    res = arca(env, "run", "--rm", "--tee", "none", image, "sh", "-c", "echo $V")
    assert (res.returncode, res.stdout) == (0, "second\n"), res.stderr
    # an image in the store by name: gone after `image rm`, even with a plan remembered
    archive = tmp / "img.tar"
    subprocess.run(["tar", "-C", str(layout), "-cf", str(archive), "."], check=True)
    assert arca(env, "image", "load", "--name", "local/warm:v1", "--tag", "v1",
                str(layout)).returncode == 0
    for _ in range(2):
        assert arca(env, "run", "--rm", "--tee", "none", "local/warm:v1", "true").returncode == 0
    assert arca(env, "image", "rm", "local/warm:v1").returncode == 0
    # --pull never: the remembered lookup must not resurrect it, and no registry is asked.
    res = arca(env, "run", "--rm", "--pull", "never", "--tee", "none", "local/warm:v1", "true")
    assert res.returncode == 125 and "is not in the store" in res.stderr


@pytest.mark.parametrize("how", ["env", "config"])
def test_tee_none_stays_plain_whatever_the_default_tee(world, how: str) -> None:  # type: ignore[no-untyped-def]
    layout, env, tmp = world
    env = dict(env)
    if how == "env":
        env["ARCA_TEE"] = "sim"
    else:
        cfg = tmp / "runtime.json"
        cfg.write_text('{"default_tee": "sim"}')
        env["ARCA_RUNTIME_CONFIG"] = str(cfg)
    probe = "test -e /run/arca/tee && echo td || echo plain"
    res = arca(env, "run", "--rm", "--tee", "none", f"oci:{layout}:v1", "sh", "-c", probe)
    assert (res.returncode, res.stdout) == (0, "plain\n"), res.stderr
    res = arca(env, "run", "--rm", "--tee", "sim", f"oci:{layout}:v1", "sh", "-c", probe)
    assert (res.returncode, res.stdout) == (0, "td\n"), res.stderr
