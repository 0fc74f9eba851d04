"""Schemathesis fuzzes the KBS's own OpenAPI document against a real server: no input, with or
without a valid admin token, may produce a 5xx. Bounded to stay around a minute."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from arca.kbs.tokens import make_admin_token
from tests.support.kbs import SimAuthority, admin_keypair, running_kbs

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SCHEMATHESIS = os.path.join(os.path.dirname(sys.executable), "schemathesis")


@pytest.mark.parametrize("as_admin", [False, True], ids=["anonymous", "admin"])
def test_openapi_fuzz_no_server_errors(tmp_path, as_admin):
    sim = SimAuthority()
    (tmp_path / "root.pem").write_bytes(sim.root_pem)
    key, pub = admin_keypair(tmp_path)
    with running_kbs(tmp_path / "data", "--trust-sim-root", str(tmp_path / "root.pem"),
                     "--admin-public-key", str(pub), "--insecure-allow-sample") as kbs:
        cmd = [SCHEMATHESIS, "run", f"{kbs.url}/openapi.json", "--checks", "not_a_server_error",
               "--max-examples", "100", "--seed", "4", "--request-timeout", "10",
               "--suppress-health-check", "all"]
        if as_admin:
            cmd += ["-H", f"Authorization: Bearer {make_admin_token(key, lifetime=3600)}"]
        # cwd: schemathesis keeps a cache directory there; keep it out of the repository
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                           env={**os.environ, "NO_COLOR": "1"})
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
        log = kbs.log.read_text()
        assert "Traceback" not in log, log[-3000:]
