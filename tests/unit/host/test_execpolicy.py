"""The host side of the execution policy: ``exec`` into a TD and what the runtime measures."""

from __future__ import annotations

import json
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.host.runtime.execpolicy import check_exec, measured_process, policy_of
from arca.wire.descriptor import ProcessSpec
from arca.wire.errors import PolicyDenied
from arca.wire.initdata import ExecPolicy

ALLOW = b'version = "0.1.0"\n[data]\npolicy = "allow_exec = true"\n'
DENY = b'version = "0.1.0"\n[data]\npolicy = "allow_exec = false"\n'
PROC = {"args": ["sh", "-c", "cat /run/arca/secrets/*"], "cwd": "/"}


def td(tmp_path: pathlib.Path, init_data: bytes | None) -> pathlib.Path:
    d = tmp_path / "td"
    d.mkdir()
    if init_data is not None:
        (d / "init-data.toml").write_bytes(init_data)
    return d


def test_exec_allowed_only_by_a_policy_that_says_so(tmp_path: pathlib.Path):
    check_exec("c1", td(tmp_path, ALLOW), PROC)


@pytest.mark.parametrize(("init_data", "reason"), [
    (None, "no init-data"),
    (DENY, "its init-data policy"),
    (b'version = "0.1.0"\n', "its init-data policy"),
    (b"not toml [", "init-data is not UTF-8 TOML"),
])
def test_exec_refused_with_a_clear_reason(tmp_path: pathlib.Path, init_data: bytes | None,
                                          reason: str):
    with pytest.raises(PolicyDenied) as e:
        check_exec("c1", td(tmp_path, init_data), PROC)
    msg = str(e.value)
    assert "TEE container c1 refused" in msg and reason in msg and "\n" not in msg


def test_exec_refusal_through_arca_runtime(tmp_path: pathlib.Path,
                                           monkeypatch: pytest.MonkeyPatch, capsys):
    """``arca-runtime exec`` refuses before runc, with the reason in the shim's log file."""
    monkeypatch.setenv("ARCA_RUN", str(tmp_path / "run"))
    monkeypatch.setenv("ARCA_RUNC", "/nonexistent-runc")
    from arca.host.runtime import state
    from arca.host.runtime.cli import main

    state.save(state.ContainerState("c1", "sim", "/b", "created"))
    state.td_dir("c1").mkdir(parents=True)
    proc = tmp_path / "p.json"
    proc.write_text(json.dumps(PROC))
    log = tmp_path / "log.json"
    rc = main(["--log", str(log), "--log-format", "json", "exec", "--process", str(proc),
               "--detach", "c1"])
    assert rc == 1
    line = json.loads(log.read_text().splitlines()[-1])
    assert line["level"] == "error" and "allow_exec is not set" in line["msg"]
    assert "Traceback" not in capsys.readouterr().err


def test_measured_process_drops_allowed_env_and_measures_the_matching_args_entry():
    policy = ExecPolicy(allow_args=(("sh", "-c", "echo *"),), allow_env=("LOG_*",))
    spec = ProcessSpec(("sh", "-c", "echo hi"), "/", 0, 0, ("LOG_LEVEL=1", "PATH=/bin"))
    out = measured_process(spec, policy)
    assert out.args == ("sh", "-c", "echo *") and out.env == ("PATH=/bin",)
    other = ProcessSpec(("sh", "-c", "cat x"), "/", 0, 0, ("PATH=/bin",))
    assert measured_process(other, policy) == other


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=8), min_size=1, max_size=4),
       st.lists(st.lists(st.text(alphabet="ab*?.", max_size=4), max_size=3), max_size=3),
       st.lists(st.sampled_from(["A=1", "B=2", "LOG_X=3", "C="]), max_size=4))
def test_measured_process_fuzz(args: list[str], allow_args: list[list[str]], env: list[str]):
    """Whatever the policy, the measured args are the host's or an allow_args entry, and the
    measured env is a subset of the host's."""
    policy = ExecPolicy(tuple(tuple(a) for a in allow_args), ("LOG_*",))
    spec = ProcessSpec(tuple(args), "/", 0, 0, tuple(env))
    out = measured_process(spec, policy)
    assert out.args == spec.args or out.args in policy.allow_args
    assert set(out.env) <= set(spec.env) and not any(e.startswith("LOG_") for e in out.env)
    assert (out.cwd, out.uid, out.gid) == (spec.cwd, spec.uid, spec.gid)


def test_policy_of_none_is_the_strict_default():
    assert policy_of(None) == ExecPolicy()
