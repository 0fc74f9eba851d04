"""Execution policy: the host-supplied process against the measured one (table-driven)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.guest.policy import args_allowed, check_process, host_process
from arca.wire.descriptor import ProcessSpec
from arca.wire.errors import PolicyDenied, WireFormatError
from arca.wire.initdata import ExecPolicy

MEASURED = ProcessSpec(("/app", "--port", "80"), "/srv", 1000, 1000, ("A=1", "PATH=/bin"))
NONE = ExecPolicy()


def host(**kw) -> ProcessSpec:
    base = {"args": MEASURED.args, "env": MEASURED.env, "cwd": "/srv", "uid": 1000,
            "gid": 1000}
    base.update(kw)
    return ProcessSpec(**base)


def test_identical_process_is_accepted() -> None:
    assert check_process(host(), MEASURED, NONE) == MEASURED


def test_orchestrator_env_is_added_and_measured_env_restored() -> None:
    spec = check_process(host(env=("HOSTNAME=x", "KUBERNETES_PORT=tcp://1", "TERM=xterm")),
                         MEASURED, NONE)
    # Measured variables the host left out come back; orchestrator ones are passed through.
    assert set(spec.env) == {"A=1", "PATH=/bin", "HOSTNAME=x", "KUBERNETES_PORT=tcp://1",
                             "TERM=xterm"}


DENIED = {
    "different command": (host(args=("/bin/sh", "-c", "cat /run/arca/secrets/*")), "args",
                          "argument 0 '/bin/sh'"),
    "extra argument": (host(args=(*MEASURED.args, "--debug")), "args", "argument 3"),
    "missing argument": (host(args=("/app", "--port")), "args", "'<missing>'"),
    "changed argument": (host(args=("/app", "--port", "81")), "args", "argument 2 '81'"),
    "added env": (host(env=(*MEASURED.env, "LD_PRELOAD=/x.so")), "env", "adds"),
    "changed measured env": (host(env=("A=2", "PATH=/bin")), "env", "changes"),
    "cwd": (host(cwd="/"), "cwd", "cwd '/'"),
    "uid": (host(uid=0), "user", "user 0:1000"),
    "gid": (host(gid=0), "user", "user 1000:0"),
}


@pytest.mark.parametrize("name", sorted(DENIED))
def test_deviations_are_refused_by_name(name: str) -> None:
    proc, field, needle = DENIED[name]
    with pytest.raises(PolicyDenied) as e:
        check_process(proc, MEASURED, NONE)
    assert e.value.fields["field"] == field
    assert needle in str(e.value)


def test_allow_args_patterns() -> None:
    pol = ExecPolicy(allow_args=(("/app", "--port", "[0-9]*"), ("/bin/sh", "-c", "echo *")))
    assert check_process(host(args=("/app", "--port", "8080")), MEASURED, pol).args == (
        "/app", "--port", "8080")
    assert check_process(host(args=("/bin/sh", "-c", "echo hi")), MEASURED, pol)
    for bad in (("/app", "--port", "x"), ("/bin/sh", "-c", "cat x"), ("/bin/sh", "-c")):
        with pytest.raises(PolicyDenied):
            check_process(host(args=bad), MEASURED, pol)


def test_ellipsis_allows_further_arguments_only_after_the_fixed_prefix() -> None:
    assert args_allowed(("/app",), ("/app", "..."))
    assert args_allowed(("/app", "a", "b"), ("/app", "..."))
    assert not args_allowed(("/other", "a"), ("/app", "..."))
    assert args_allowed(("anything",), ("...",))


def test_allow_env_patterns_add_and_override() -> None:
    pol = ExecPolicy(allow_env=("LOG_*", "A"))
    spec = check_process(host(env=("A=2", "LOG_LEVEL=debug")), MEASURED, pol)
    assert set(spec.env) == {"A=2", "PATH=/bin", "LOG_LEVEL=debug"}
    with pytest.raises(PolicyDenied):
        check_process(host(env=("LOGX=1",)), MEASURED, pol)


def test_no_policy_widens_cwd_or_user() -> None:
    pol = ExecPolicy(allow_args=(("...",),), allow_env=("*",), allow_exec=True)
    with pytest.raises(PolicyDenied):
        check_process(host(uid=0, gid=0), MEASURED, pol)
    with pytest.raises(PolicyDenied):
        check_process(host(cwd="/tmp"), MEASURED, pol)


@pytest.mark.parametrize("obj", [
    [], {"args": []}, {"args": "sh"}, {"args": ["sh"], "env": "A=1"},
    {"args": ["sh"], "cwd": 1}, {"args": ["sh"], "user": {"uid": "0"}}, {"args": [1]},
])
def test_malformed_process_json(obj) -> None:
    with pytest.raises(WireFormatError):
        host_process(obj)


def test_process_json_with_oci_extras() -> None:
    p = host_process({"args": ["/app"], "terminal": True, "cwd": "/srv",
                              "user": {"uid": 1, "gid": 2, "additionalGids": [3]},
                              "capabilities": {}, "rlimits": []})
    assert (p.args, p.env, p.cwd, p.uid, p.gid) == (("/app",), (), "/srv", 1, 2)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=4)
                           | st.dictionaries(st.text(max_size=6), c, max_size=4),
                           max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["args", "env", "cwd", "user", "terminal"]),
                       json_values, max_size=5))
def test_fuzz_process_json_and_policy(obj) -> None:
    try:
        proc = host_process(obj)
    except WireFormatError:
        return
    try:
        spec = check_process(proc, MEASURED, NONE)
    except PolicyDenied:
        return
    assert spec.args == MEASURED.args and spec.uid == MEASURED.uid
