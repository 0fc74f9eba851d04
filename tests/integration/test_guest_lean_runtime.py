"""A sim TD without a KBS, in the shipped guest runtime (trimmed stdlib): the agent checks its
policy (orchestrator env, ``*``/``?``/``[]`` policy patterns, TOML arrays), gets and checks its
report and writes evidence.json with the public stdlib (ADR 0054: no ``_json``, ``_sha2``,
``_signal``, ``_socket``, ``_operator``), without loading cryptography, the stdlib's HTTP client
or ``dataclasses`` (each ms of every start); the runtime ships what those modules import
lazily (json's and tomllib's errors, fnmatch's patterns)."""

from __future__ import annotations

import json
import pathlib

import pytest

from arca.host.simtee.platform import init_data_hash
from arca.wire.descriptor import LaunchDescriptor, ProcessSpec
from tests.support.guest_simdevice import SimDeviceServer
from tests.support.guest_td import run_in_guest_runtime as run_in_runtime

pytestmark = [pytest.mark.integration]

HEAVY = ("cryptography", "ssl", "http.client", "email", "dataclasses", "inspect", "_hashlib",
         "arca.guest.kbs_client")
SPEC = ProcessSpec(("/bin/true",), "/", 0, 0, ("PATH=/usr/bin:/bin",))
DESCRIPTOR = LaunchDescriptor("sim", "sha256:" + "5" * 64, "sha256:" + "6" * 64, SPEC)
# DB_SERVICE_PORT: service links are measured unless the policy names them (issue 13 item 5).
INIT = (b'version = "0.1.0"\n[data]\npolicy = \'\'\'\nallow_env = ["APP_?ODE", "X[0-9]"]\n'
        b'orchestrator_env = ["*_SERVICE_PORT"]\n\'\'\'\n')


def test_a_td_without_kbs_starts_without_json_or_re(tmp_path: pathlib.Path) -> None:
    dev, run = tmp_path / "tee", tmp_path / "run"
    dev.mkdir()
    run.mkdir()
    (dev / "descriptor.json").write_text(json.dumps(DESCRIPTOR.to_json()))
    (dev / "process.json").write_text(json.dumps({
        "args": ["/bin/true"], "cwd": "/",
        "env": ["PATH=/usr/bin:/bin", "HOSTNAME=td", "DB_SERVICE_PORT=5432", "APP_MODE=x",
                "X7=y"]}))
    (dev / "init-data.toml").write_bytes(INIT)
    device = SimDeviceServer(str(dev / "sim.sock"), DESCRIPTOR.measurement(),
                             init_data_hash(INIT))
    try:
        # The workload's exec is where the agent's start ends: report the modules there.
        code = ("import os, sys; from arca.guest.agent import main, Paths; "
                "os.execvpe = lambda f, a, env: (print(sorted(set(sys.modules) & "
                f"{set(HEAVY)!r}), sorted(env)), sys.stdout.flush(), os._exit(0)); "
                f"main(Paths({str(dev)!r}, {str(run)!r}))")
        res = run_in_runtime(tmp_path / "root", code)
    finally:
        device.close()
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("] ", 1) == [
        "[", "['APP_MODE', 'DB_SERVICE_PORT', 'HOSTNAME', 'PATH', 'X7']\n"]
    assert len(device.requests) == 1
    doc = json.loads((run / "evidence.json").read_text())
    assert doc["tee"] == "sim" and bytes.fromhex(doc["report_data"]) == device.requests[0]


def test_errors_of_the_public_parsers_work_in_the_shipped_runtime(tmp_path: pathlib.Path) -> None:
    code = ("from arca.wire.initdata import InitData\n"
            "from arca.wire.descriptor import LaunchDescriptor\n"
            "for bad in (b'version = [', b'\\xff'):\n"
            "    try:\n        InitData.parse(bad)\n"
            "    except Exception as e:\n        print(type(e).__name__)\n"
            "try:\n    LaunchDescriptor.from_bytes(b'[1,')\n"
            "except Exception as e:\n    print(type(e).__name__)\n")
    res = run_in_runtime(tmp_path / "root", code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["InitDataError", "InitDataError", "WireFormatError"]
