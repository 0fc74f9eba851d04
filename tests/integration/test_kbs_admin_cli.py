"""``arca kbs admin`` against a real KBS: the lean path (no typer) and the typer commands
print the same and exit the same, options anywhere or from the environment, and
``set-reference-values`` installs what ``arca policy generate`` writes in one call."""

from __future__ import annotations

import json
import pathlib

import pytest

from arca.cli import leanpath
from tests.support.cli import run_main
from tests.support.kbs import admin_keypair, running_kbs

pytestmark = pytest.mark.integration


def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, lean: bool,
        *argv: str) -> tuple[int, str, str]:
    monkeypatch.setenv("ARCA_CLI_FASTPATH", "1" if lean else "0")
    return run_main(capsys, *argv)


def test_lean_and_typer_admin_agree(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _, pub = admin_keypair(tmp_path)
    values = tmp_path / "reference-values.json"
    values.write_text(json.dumps({"release:default:app:key": ["sim/aa/bb"], "x.y": ["1"]}))
    (tmp_path / "secret").write_text("s3")
    with running_kbs(tmp_path / "kbs", "--admin-public-key", str(pub)) as kbs:
        monkeypatch.setenv("ARCA_KBS_ADMIN_KEY", str(tmp_path / "admin.key"))
        monkeypatch.delenv("ARCA_KBS_URL", raising=False)
        for lean in (True, False):
            assert cli(capsys, monkeypatch, lean, "kbs", "admin", "set-reference-values",
                       "--file", str(values), "--url", kbs.url) == (
                0, "set 2 reference value(s): release:default:app:key, x.y\n", "")
            monkeypatch.setenv("ARCA_KBS_URL", kbs.url)
            code, out, _ = cli(capsys, monkeypatch, lean, "kbs", "admin", "get-reference-values")
            assert code == 0 and json.loads(out) == json.loads(values.read_text())
            assert cli(capsys, monkeypatch, lean, "kbs", "admin", "set-resource", "a/b/c",
                       "--file", str(tmp_path / "secret"))[0] == 0
            assert cli(capsys, monkeypatch, lean, "kbs", "admin", "get-resource",
                       "a/b/c")[:2] == (0, "s3")
            code, _, err = cli(capsys, monkeypatch, lean, "kbs", "admin", "get-resource", "n/o/ne")
            assert code == 125 and err.startswith("arca: error: KBS ") and err.count("\n") == 1
            monkeypatch.delenv("ARCA_KBS_URL")
    # forms the lean path leaves to typer (help, usage errors) decide nothing themselves
    for argv in (["kbs", "admin", "--help"], ["kbs", "admin", "get-resource", "--help"],
                 ["kbs", "admin", "get-policy", "nope"], ["kbs", "admin", "nope"],
                 ["kbs", "admin", "set-resource", "a/b/c"], ["kbs", "admin", "--url"]):
        assert leanpath.dispatch(argv) is None, argv
