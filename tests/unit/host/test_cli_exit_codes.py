"""podman's exit codes for Arca's own errors (ADR 0050): 125, usage errors included; ``arca
verify`` keeps its documented 0 valid / 1 invalid / 2 usage."""

from __future__ import annotations

import pytest

from arca.cli import fastpath
from arca.cli.main import main


@pytest.mark.parametrize("fast", ["1", "0"])
@pytest.mark.parametrize(("argv", "code", "says"), [
    (["run", "--no-such-flag", "img"], 125, "No such option"),
    (["ps", "--nope"], 125, "No such option"),
    (["no-such-command"], 125, "No such command"),
    (["inspect"], 125, "Missing argument"),
    (["kbs", "keygen", "--out"], 125, "requires an argument"),
    (["inspect", "nope"], 125, "arca: error: no such container: nope"),
    (["verify", "--nope"], 2, "No such option"),
    (["kbs", "admin", "get-resource", "a/b/c", "--url", "http://127.0.0.1:9",
      "--admin-key", "/nonexistent/admin.key"], 125,
     "arca: error: admin key /nonexistent/admin.key: No such file or directory\n"),
])
def test_own_errors_exit_125(argv: list[str], code: int, says: str, fast: str,
                             tmp_path, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(fastpath.DISABLE_ENV, fast)
    monkeypatch.setenv("ARCA_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("ARCA_RUN", str(tmp_path / "run"))
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == code
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err, err
    # one line in Arca's error style, not typer's box (issue 15): podman's is one line too
    assert err.count("\n") == 1 and err.startswith("arca: error: "), err


@pytest.mark.parametrize(("argv", "says"), [
    (["images", "--bogus"], "No such option: --bogus (see 'arca images --help')"),
    (["kbs", "admin", "get-resource"], "Missing argument"),
    (["stop", "--time", "abc", "x"], "Invalid value for '--time'"),
])
def test_usage_errors_are_one_line_naming_the_help(
        argv: list[str], says: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(fastpath.DISABLE_ENV, "0")
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 125 and err.count("\n") == 1, err
    assert err.startswith("arca: error: ") and says in err, err


def test_help_and_a_bare_group_print_help(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(fastpath.DISABLE_ENV, "0")
    with pytest.raises(SystemExit) as e:
        main(["ps", "--help"])
    out = capsys.readouterr()
    assert e.value.code == 0 and "--format" in out.out and out.err == ""
    with pytest.raises(SystemExit) as e:
        main(["volume"])  # podman's code for a group without its command: 125, help shown
    out = capsys.readouterr()
    assert e.value.code == 125 and "create" in out.out + out.err and "error" not in out.err


def test_usage_error_code_is_not_left_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 125 of a usage error applies to that one call: a later ``arca verify`` in the same
    process (tests, embedders) still gets click's 2."""
    import typer

    usage = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
    monkeypatch.setenv(fastpath.DISABLE_ENV, "0")
    with pytest.raises(SystemExit):
        main(["ps", "--nope"])
    assert usage.exit_code == 2


@pytest.mark.parametrize("flag", ["--version", "-v"])
def test_version_flag_as_podman(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    from arca import __version__

    with pytest.raises(SystemExit) as e:
        main([flag])
    assert e.value.code == 0 and capsys.readouterr().out == f"arca version {__version__}\n"


def _every_command() -> list[list[str]]:
    """The argv of every command and group of the ``arca`` CLI (typer's click tree; recent
    typers carry their own click, so groups are found by their ``commands``)."""
    from typing import Any

    import typer

    from arca.cli.main import build_app

    paths: list[list[str]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        paths.append(path)
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(build_app()), [])
    return paths


@pytest.mark.parametrize("argv", _every_command(), ids=lambda a: " ".join(a) or "arca")
def test_every_commands_help_renders(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` of every command prints its help and exits 0 (help text is rich markup: a
    ``[...]`` in it once raised a traceback instead)."""
    monkeypatch.setenv(fastpath.DISABLE_ENV, "0")
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    out = capsys.readouterr()
    assert e.value.code == 0, out.err
    assert "Usage" in out.out and "Traceback" not in out.out + out.err
