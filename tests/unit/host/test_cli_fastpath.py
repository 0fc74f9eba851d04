"""The lean parser of the container commands (arca.cli.fastpath) against the typer commands:
same options (names, flags, defaults, multiplicity, types), same parse results where it accepts
a command line (fuzzed), typer for everything else, and the same errors and exit codes."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.cli import container_ops, fastpath
from arca.cli.main import build_app, main


@pytest.fixture(scope="module")
def commands() -> dict[str, Any]:
    import typer.main

    return typer.main.get_command(build_app()).commands  # type: ignore[attr-defined,no-any-return]


def test_the_same_commands_exist(commands: dict[str, Any]) -> None:
    for name, cmd in fastpath.COMMANDS.items():
        assert name in commands
        func = getattr(container_ops, cmd.func)
        dests = [a.dest for a in cmd.args] + [o.dest for o in cmd.opts]
        assert sorted(inspect.signature(func).parameters) == sorted(dests)


@pytest.mark.parametrize("name", sorted(fastpath.COMMANDS))
def test_options_match_typer(commands: dict[str, Any], name: str) -> None:
    click_cmd = commands[name]
    lean = fastpath.COMMANDS[name]
    args, opts = [], []
    for p in click_cmd.params:
        if p.param_type_name == "argument":
            args.append((p.name, p.nargs == -1, p.required))
        else:
            kind = "flag" if p.is_flag else "multi" if p.multiple else "value"
            assert not p.secondary_opts, f"{p.name}: --no-... flags are not in the lean parser"
            assert p.nargs == 1 and p.envvar is None and not p.count
            ann = p.type_descriptor.annotation
            if typing.get_origin(ann) is list:
                (ann,) = typing.get_args(ann)
            opts.append((p.name, tuple(p.opts), kind, p.default, bool if p.is_flag else ann))
    assert args == [(a.dest, a.many, a.required) for a in lean.args]
    assert sorted(opts) == sorted(
        (o.dest, o.flags, o.kind, o.default, bool if o.kind == "flag" else o.convert)
        for o in lean.opts)
    assert click_cmd.context_settings.get("allow_interspersed_args", True) == lean.interspersed


def _normalize(cmd: fastpath.Command, params: dict[str, Any]) -> dict[str, Any]:
    out = dict(params)
    for o in cmd.opts:
        if o.kind == "multi":
            out[o.dest] = list(out.get(o.dest) or [])
        elif isinstance(out.get(o.dest), Path):
            out[o.dest] = str(out[o.dest])
    for a in cmd.args:
        if a.many:
            out[a.dest] = list(out.get(a.dest) or [])
    return out


def _click_parse(commands: dict[str, Any], name: str, argv: list[str]) -> dict[str, Any]:
    ctx = commands[name].make_context(name, list(argv))
    return _normalize(fastpath.COMMANDS[name], ctx.params)


SAMPLES = [
    ["run", "img"],
    ["run", "--rm", "--tee", "none", "img", "sh", "-c", "echo $X; exit 3"],
    ["run", "-d", "--name", "web", "-e", "A=1", "--env=B=2", "-v", "/a:/b:ro", "img", "-e", "x"],
    ["run", "--kbs", "http://127.0.0.1:1", "--init-data", "/x.toml", "--tee=sim", "img"],
    ["run", "--name", "a", "--name", "b", "img", "--", "x"],
    ["run", "img", "-"],
    ["ps"], ["ps", "-a", "--json"], ["ps", "--all"],
    ["logs", "c"], ["logs", "-f", "c"], ["logs", "c", "--follow"],
    ["stop", "a"], ["stop", "-t", "0.5", "a", "b"], ["stop", "a", "--time=3"],
    ["rm", "a", "b"], ["rm", "-f", "a"], ["rm", "a", "--force"],
    ["exec", "c", "sh", "-c", "x"], ["exec", "-e", "A=1", "c", "env", "-e"],
    ["inspect", "c"],
]


@pytest.mark.parametrize("argv", SAMPLES, ids=" ".join)
def test_common_forms_parse_as_typer_parses_them(commands: dict[str, Any],
                                                 argv: list[str]) -> None:
    lean = fastpath.parse(fastpath.COMMANDS[argv[0]], argv[1:])
    assert lean is not None, "a common form must take the fast path"
    assert _normalize(fastpath.COMMANDS[argv[0]], lean) == _click_parse(commands, argv[0],
                                                                         argv[1:])


@pytest.mark.parametrize("argv", [
    ["run"], ["run", "--help"], ["run", "-dh", "img"], ["run", "--rm=1", "img"],
    ["run", "--tee"], ["run", "--unknown", "img"], ["run", "--", "img"], ["ps", "x"],
    ["logs"], ["logs", "a", "b"], ["stop"], ["stop", "-t", "soon", "a"], ["rm", "-fx", "a"],
    ["exec", "c"], ["inspect"], ["inspect", "-h"],
])
def test_other_forms_go_to_typer(argv: list[str]) -> None:
    assert fastpath.parse(fastpath.COMMANDS[argv[0]], argv[1:]) is None
    assert fastpath.dispatch(argv) is None


def test_non_container_commands_go_to_typer() -> None:
    for argv in ([], ["--help"], ["image", "ls"], ["version"], ["runx"]):
        assert fastpath.dispatch(argv) is None


TOKENS = ["img", "c", "sh", "-", "--", "-d", "-a", "-f", "-e", "-v", "-t", "-h", "--rm",
          "--name", "--tee", "--tee=none", "--env=A=1", "--json", "--all", "--force",
          "--follow", "--time", "--time=2", "1.5", "x=y", "--init-data", "--kbs", "-df",
          "--help", "--detach", "--volume", "-it", "-ti", "-dt", "-qa", "-aq"]


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(fastpath.COMMANDS)),
       argv=st.lists(st.sampled_from(TOKENS), max_size=7))
def test_fuzz_accepted_lines_parse_as_typer_parses_them(name: str, argv: list[str]) -> None:
    import typer.main

    commands = typer.main.get_command(build_app()).commands  # type: ignore[attr-defined]
    lean = fastpath.parse(fastpath.COMMANDS[name], argv)
    if lean is None:
        return  # typer handles it, whatever it is
    assert _normalize(fastpath.COMMANDS[name], lean) == _click_parse(commands, name, argv)


@pytest.mark.parametrize("fast", ["1", "0"])
def test_errors_are_one_line_with_the_same_exit_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        fast: str) -> None:
    monkeypatch.setenv(fastpath.DISABLE_ENV, fast)
    monkeypatch.setenv("ARCA_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("ARCA_RUN", str(tmp_path / "run"))
    for argv, code, msg in (
            (["run", "--tee", "tdx", "img"], 125, "arca: error: --tee 'tdx': arca run supports"),
            (["run", "--init-data", str(tmp_path / "none.toml"), "img"], 125,
             "arca: error: cannot read init-data"),
            (["inspect", "nope"], 125, "arca: error: no such container"),
            # podman's rm: 1 for a container that is not there
            (["rm", "nope"], 1, "arca: error: no such container")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == code
        err = capsys.readouterr().err
        assert err.startswith(msg) and err.count("\n") == 1, err


@pytest.mark.parametrize("fast", ["1", "0"])
def test_ps_prints_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str], fast: str) -> None:
    monkeypatch.setenv(fastpath.DISABLE_ENV, fast)
    monkeypatch.setenv("ARCA_ROOT", str(tmp_path / "root"))
    for argv, out in ((["ps"], "CONTAINER ID   NAME"), (["ps", "--json", "-a"], "[]")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
        assert capsys.readouterr().out.startswith(out)


def test_fast_path_imports_neither_typer_nor_rich_nor_pydantic(tmp_path: Path) -> None:
    code = ("import sys\nfrom arca.cli.main import main\ntry:\n    main(['inspect', 'nope'])\n"
            "except SystemExit as e:\n    assert e.code == 125\n"
            "print(sorted(m for m in ('typer', 'rich', 'pydantic', 'click', 'httpx') "
            "if m in sys.modules))")
    env = {**os.environ, "ARCA_ROOT": str(tmp_path / "root")}
    env.pop(fastpath.DISABLE_ENV, None)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.stdout.strip() == "[]", res.stdout + res.stderr
