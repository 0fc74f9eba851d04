"""Issue 15: the first hash of a large image's files shows progress on a terminal (``arca
measure``, ``arca run --tee sim``) with totals and a done line, and plain lines (no cursor
movement) in a log; the digest is the same either way (the runtime then reads it from the
cache)."""

from __future__ import annotations

import json
import os

import pytest

from tests.support.arca_run import NEEDS_ROOT_RUNC_UMOCI, arca, arca_env, on_terminal
from tests.support.images import build_busybox_image

pytestmark = [pytest.mark.integration, NEEDS_ROOT_RUNC_UMOCI]

BIG = 24 << 20  # bytes of file content beyond busybox's


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("hashprog")
    files = {f"data/blob{i}": os.urandom(BIG // 4) for i in range(4)}
    build_busybox_image(tmp / "layout", "v1", files=files)
    with arca_env(tmp, "ahp-") as env:
        env["ARCA_PROGRESS_AFTER"] = "0"  # show it whatever this machine's speed
        yield env, f"oci:{tmp / 'layout'}:v1"


def test_measure_shows_progress_once_then_uses_the_cache(world) -> None:  # type: ignore[no-untyped-def]
    env, image = world
    code, out, shown = on_terminal(env, "measure", "--tee", "sim", "--json", image)
    assert code == 0, shown
    digest = json.loads(out)["rootfs_digest"]
    lines = shown.replace("\r\n", "\n").split("\n")
    progress = [ln for ln in shown.split("\r") if "MB (" in ln and "MB/s)" in ln]
    assert progress, shown  # at least one in-place update, with done/total and speed
    total_mb = f"{(BIG + os.path.getsize('/bin/busybox')) / 1e6:.1f}"
    assert any(f"/ {total_mb} MB (" in p for p in progress), (total_mb, shown)
    done = [ln for ln in lines if ": done, " in ln]
    assert len(done) == 1 and f"done, {total_mb} MB in " in done[0], shown
    # cached now: a second measure hashes nothing and shows nothing
    code, out, shown = on_terminal(env, "measure", "--tee", "sim", "--json", image)
    assert code == 0 and json.loads(out)["rootfs_digest"] == digest
    assert "MB (" not in shown and ": done, " not in shown, shown


def test_a_log_gets_plain_lines_and_run_shows_progress(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env, image = world
    cold = {**env, "ARCA_ROOT": str(tmp_path / "cold")}  # no cache: the image is new here
    res = arca(cold, "measure", "--tee", "sim", "--json", image)  # stderr: a pipe, a CI log
    assert res.returncode == 0, res.stderr
    assert "\r" not in res.stderr and "\x1b" not in res.stderr, repr(res.stderr)
    lines = res.stderr.splitlines()
    total_mb = f"{(BIG + os.path.getsize('/bin/busybox')) / 1e6:.1f}"
    assert any(f"/ {total_mb} MB (" in ln for ln in lines), res.stderr  # what it hashes
    assert lines[-1].startswith("measuring ") and f": done, {total_mb} MB in " in lines[-1]
    digest = json.loads(res.stdout)["rootfs_digest"]
    # the default: nothing for a hash shorter than a log would care about
    quiet = {k: v for k, v in env.items() if k != "ARCA_PROGRESS_AFTER"}
    res = arca({**quiet, "ARCA_ROOT": str(tmp_path / "quiet"), "ARCA_PROGRESS_AFTER": "60"},
               "measure", "--tee", "sim", "--json", image)
    assert res.returncode == 0 and "MB" not in res.stderr, res.stderr
    assert json.loads(res.stdout)["rootfs_digest"] == digest
    # arca run --tee sim on a terminal: the same progress before the container runs
    other = {**env, "ARCA_ROOT": str(tmp_path / "run")}
    code, out, shown = on_terminal(other, "run", "--rm", "--tee", "sim", image, "true")
    assert code == 0, shown
    assert ": done, " in shown and "measuring " in shown, shown
    res = arca(other, "measure", "--tee", "sim", "--json", image)
    assert json.loads(res.stdout)["rootfs_digest"] == digest
