"""``arca-runtime``'s command line: global options, pass-through to runc, one-line errors."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.host.runtime.cli import main, split_globals
from arca.host.runtime.lifecycle import parse_create, parse_delete, parse_exec
from arca.wire.errors import InvalidInput

RUNTIME = str(pathlib.Path(sys.executable).parent / "arca-runtime")


@pytest.mark.parametrize(
    ("argv", "opts", "index"),
    [
        (["--root", "/r", "--log", "/l", "--log-format", "json", "create", "x"],
         {"root": "/r", "log": "/l", "log-format": "json"}, 6),
        (["--root=/r", "--systemd-cgroup", "start", "x"],
         {"root": "/r", "systemd-cgroup": True}, 2),
        (["-root", "/r", "--debug", "kill", "x", "9"], {"root": "/r", "debug": True}, 3),
        (["state", "x"], {}, 0),
        (["--version"], {"version": True}, 1),
        ([], {}, 0),
    ],
)
def test_split_globals(argv: list[str], opts: dict, index: int) -> None:
    assert split_globals(argv) == (opts, index)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["--root", "--log", "-log-format", "--debug", "--x=1", "create",
                                 "x", "--", "-", "--root=", ""]), max_size=8))
def test_fuzz_split_globals_never_fails(argv: list[str]) -> None:
    opts, i = split_globals(argv)
    assert 0 <= i <= len(argv)


def test_subcommand_parsing_matches_the_shim() -> None:
    c = parse_create(["--bundle", "/b", "--pid-file", "/p", "--console-socket", "/s",
                      "--no-pivot", "c1"])
    assert (c.bundle, c.pid_file, c.console_socket, c.no_pivot, c.id) == ("/b", "/p", "/s",
                                                                         True, "c1")
    assert parse_create(["-bundle", "/b", "c1"]).bundle == "/b"
    assert parse_delete(["--force", "c1"]).force and not parse_delete(["c1"]).force
    e = parse_exec(["--process", "/p.json", "--detach", "--pid-file", "/x", "c1"])
    assert (e.process, e.detach, e.id) == ("/p.json", True, "c1")
    e = parse_exec(["-t", "-e", "A=1", "c1", "sh", "-c", "true"])
    assert e.command == ["sh", "-c", "true"] and e.env == ["A=1"]
    with pytest.raises(InvalidInput):
        parse_create(["--bogus", "c1"])
    with pytest.raises(InvalidInput):
        parse_delete([])


@pytest.fixture
def env(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A fake runc that records its argv and cwd, and isolated Arca dirs."""
    fake = tmp_path / "fake-runc"
    fake.write_text(f'#!/bin/sh\necho "$PWD|$*" >> {tmp_path}/calls\nexit "${{FAKE_RC:-0}}"\n')
    fake.chmod(0o755)
    values = {"ARCA_RUNC": str(fake), "ARCA_ROOT": str(tmp_path / "root"),
              "ARCA_RUN": str(tmp_path / "run"),
              "ARCA_RUNTIME_CONFIG": str(tmp_path / "none.json")}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("ARCA_TEE", raising=False)
    return values


def calls(tmp_path: pathlib.Path) -> list[str]:
    f = tmp_path / "calls"
    return f.read_text().splitlines() if f.exists() else []


def run(argv: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RUNTIME, *argv], capture_output=True, text=True, timeout=30, **kw)


@pytest.mark.parametrize("argv", [
    ["--root", "/r", "--log", "/l", "--log-format", "json", "start", "c1"],
    ["--root", "/r", "kill", "--all", "c1", "9"],
    ["ps", "--format", "json", "c1"],
    ["state", "c1"], ["pause", "c1"], ["resume", "c1"], ["features"], ["update", "c1"],
    ["--root", "/r", "delete", "--force", "c1"],
    ["exec", "--process", "/p.json", "--detach", "--pid-file", "/x", "c1"],
    ["checkpoint", "c1"],
])
def test_pass_through_gives_runc_the_exact_argv(env, tmp_path: pathlib.Path, argv) -> None:
    res = run(argv, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert calls(tmp_path) == [f"{tmp_path}|{' '.join(argv)}"]


def test_pass_through_keeps_the_exit_code(env, tmp_path: pathlib.Path) -> None:
    res = run(["kill", "c1", "15"], env={**os.environ, "FAKE_RC": "3"})
    assert res.returncode == 3


def write_bundle(d: pathlib.Path, config: dict | str, rootfs: bool = True) -> pathlib.Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if rootfs:
        (d / "rootfs").mkdir(exist_ok=True)
    return d


def config(tee: str | None = None, **over) -> dict:
    cfg = {"ociVersion": "1.0.2", "root": {"path": "rootfs"},
           "process": {"args": ["sh"], "cwd": "/", "env": []}}
    if tee:
        cfg["annotations"] = {"io.arca.tee": tee}
    cfg.update(over)
    return cfg


def test_plain_create_is_passed_through(env, tmp_path: pathlib.Path) -> None:
    b = write_bundle(tmp_path / "b", config())
    argv = ["--root", "/r", "create", "--bundle", str(b), "--pid-file", "/p", "c1"]
    assert run(argv).returncode == 0
    assert calls(tmp_path)[0].endswith("|" + " ".join(argv))
    b2 = write_bundle(tmp_path / "b2", config("sim", annotations={
        "io.arca.tee": "sim", "io.kubernetes.cri.container-type": "sandbox"}))
    assert run(["create", "--bundle", str(b2), "pause1"]).returncode == 0
    assert len(calls(tmp_path)) == 2
    assert not (pathlib.Path(env["ARCA_RUN"]) / "containers").exists()


@pytest.mark.parametrize(
    ("cfg", "rootfs", "message"),
    [
        ("{malformed", True, "malformed config.json"),
        (config("xyz"), True, "unknown TEE 'xyz'"),
        (config("tdx"), True, "'tdx'"),
        (config("sim"), False, "rootfs"),
        (config("sim", process={"args": []}), True, "process.args"),
        (config("sim", annotations={"io.arca.tee": "sim", "io.arca.init-data": "***"}), True,
         "base64"),
    ],
)
def test_create_errors_are_one_json_line_in_the_log(env, tmp_path: pathlib.Path, cfg, rootfs,
                                                   message, capsys) -> None:
    b = write_bundle(tmp_path / "b", cfg, rootfs)
    log = tmp_path / "log.json"
    rc = main(["--root", str(tmp_path / "runc"), "--log", str(log), "--log-format", "json",
               "create", "--bundle", str(b), "--pid-file", str(tmp_path / "pid"), "c1"])
    assert rc == 1
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["level"] == "error" and message in entry["msg"] and entry["time"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("arca-runtime: error: ") and message in err
    assert "Traceback" not in err
    assert calls(tmp_path) == []  # runc never ran
    assert not (pathlib.Path(env["ARCA_RUN"]) / "containers" / "c1").exists()


def test_text_log_format(env, tmp_path: pathlib.Path, capsys) -> None:
    b = write_bundle(tmp_path / "b", config("bogus"))
    log = tmp_path / "log"
    assert main(["--log", str(log), "create", "--bundle", str(b), "c1"]) == 1
    assert 'level=error msg="unknown TEE' in log.read_text()


def test_usage_errors_are_one_line(env, tmp_path: pathlib.Path, capsys) -> None:
    assert main(["create", "--bogus", "c1"]) == 1
    err = capsys.readouterr().err
    assert "unrecognized arguments: --bogus" in err and "Traceback" not in err


def test_checkpoint_of_a_tee_container_is_refused(env, tmp_path: pathlib.Path, capsys) -> None:
    from arca.host.runtime import state

    state.save(state.ContainerState("c1", "sim", "/b", "created"))
    assert main(["checkpoint", "--image-path", "/x", "c1"]) == 1
    assert "checkpoint of TEE container c1 refused" in capsys.readouterr().err
    assert calls(tmp_path) == []


def test_exec_into_a_tee_container_goes_through_check_exec_allowed(
        env, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from arca.host.runtime import lifecycle, state
    from arca.wire.errors import PolicyDenied

    state.save(state.ContainerState("c1", "sim", "/b", "created"))
    proc = tmp_path / "p.json"
    proc.write_text(json.dumps({"args": ["sh"], "cwd": "/"}))
    seen = []

    def deny(st, process):
        seen.append((st.id, process["args"]))
        raise PolicyDenied("exec of sh refused by policy")

    monkeypatch.setattr(lifecycle, "check_exec_allowed", deny)
    assert main(["exec", "--process", str(proc), "--detach", "c1"]) == 1
    assert seen == [("c1", ["sh"])]
    assert "exec of sh refused by policy" in capsys.readouterr().err
    assert calls(tmp_path) == []


def test_version_mentions_both(env, tmp_path: pathlib.Path) -> None:
    res = run(["--version"])
    assert res.returncode == 0 and res.stdout.startswith("arca-runtime version ")


def test_fast_state_lookup_matches_the_state_module(env) -> None:
    from arca.host.runtime import cli, state

    assert not cli._has_arca_state("c9")
    state.save(state.ContainerState("c9", "sim", "/b", "created"))
    assert cli._has_arca_state("c9") and state.state_path("c9").exists()
    state.remove("c9")
    assert not cli._has_arca_state("c9") and not cli._has_arca_state("../x")


def test_fast_plain_create_check(env, tmp_path: pathlib.Path, monkeypatch) -> None:
    from arca.host.runtime.cli import _obviously_plain

    b = write_bundle(tmp_path / "b", config())
    assert _obviously_plain(["--bundle", str(b), "c1"])
    assert _obviously_plain([f"--bundle={b}", "c1"])
    write_bundle(b, config("sim"))
    assert not _obviously_plain(["-b", str(b), "c1"])
    write_bundle(b, config(annotations={"io.kubernetes.cri.container-type": "sandbox",
                                        "io.arca.tee": "sim"}))
    assert _obviously_plain(["--bundle", str(b), "c1"])
    write_bundle(b, config())
    monkeypatch.setenv("ARCA_TEE", "sim")
    assert not _obviously_plain(["--bundle", str(b), "c1"])
    write_bundle(b, "{broken")
    assert not _obviously_plain(["--bundle", str(b), "c1"])
    assert not _obviously_plain(["--bundle", str(tmp_path / "missing"), "c1"])
