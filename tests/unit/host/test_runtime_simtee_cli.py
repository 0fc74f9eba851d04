"""``arca simtee`` commands, in-process (the daemon they start is real)."""

from __future__ import annotations

import json
import pathlib

import pytest
from typer.testing import CliRunner

from arca.cli.main import build_app


@pytest.fixture
def cli(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ARCA_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("ARCA_RUN", str(tmp_path / "run"))
    app = build_app()
    runner = CliRunner()
    yield lambda *args: runner.invoke(app, ["simtee", *args])
    from arca.host.simtee import client

    client.stop()


def test_root_cert_status_start_stop(cli, tmp_path: pathlib.Path) -> None:
    res = cli("root-cert", "--path")
    assert res.exit_code == 0
    path = pathlib.Path(res.stdout.strip())
    assert path == tmp_path / "root" / "simtee" / "sim-root.pem" and path.exists()
    pem = cli("root-cert").stdout
    assert pem.startswith("-----BEGIN CERTIFICATE-----") and pem.strip() == path.read_text().strip()

    res = cli("status")
    assert res.exit_code == 3 and "not running" in res.stdout
    assert cli("start").exit_code == 0
    res = cli("status", "--json")
    doc = json.loads(res.stdout)
    assert doc["running"] and doc["pid"] and doc["tds"] == []
    assert cli("status").stdout.startswith("sim platform: running")
    assert "stopped" in cli("stop").stdout
    assert "was not running" in cli("stop").stdout
    # The root survives restarts: a KBS configured with it keeps trusting the platform.
    assert cli("root-cert").stdout == pem
