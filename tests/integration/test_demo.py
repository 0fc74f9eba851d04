"""`arca demo` (what `make demo` runs) behaves as described, in an isolated state directory."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

pytestmark = pytest.mark.integration


def test_demo_delivers_then_refuses() -> None:
    # Short state paths: per-TD unix sockets live below ARCA_RUN (108-byte sun_path limit).
    tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="arca-demo-t", dir="/tmp"))
    env = {**os.environ, "ARCA_ROOT": str(tmp_path / "root"), "ARCA_RUN": str(tmp_path / "run")}
    arca = [sys.executable, "-m", "arca.cli.main"]
    try:
        # The sim story; the vm act has its own test (tests/integration/test_vm_backend.py).
        res = subprocess.run([*arca, "demo", "--tee", "sim"], env=env, capture_output=True,
                             text=True, timeout=300, stdin=subprocess.DEVNULL)
        out = res.stdout + res.stderr
        assert res.returncode == 0, out
        assert "my secret is: the launch code is 0000" in out
        assert "secret delivered after attestation" in out
        assert "tampered image refused" in out
        assert "403 PolicyDeny" in out
        # Nothing of the demo's containers or images is left behind.
        ps = subprocess.run([*arca, "ps", "-a"], env=env, capture_output=True, text=True)
        assert "arca-demo" not in ps.stdout
        images = subprocess.run([*arca, "image", "ls"], env=env, capture_output=True, text=True)
        assert "arca-demo" not in images.stdout
        mounts = pathlib.Path("/proc/self/mountinfo").read_text()
        assert str(tmp_path) not in mounts
    finally:
        subprocess.run([*arca, "simtee", "stop"], env=env, capture_output=True)
        shutil.rmtree(tmp_path, ignore_errors=True)
