"""Issue 13 item 7: ``arca policy`` warns about execution-policy patterns that let the host
choose code (the docs' old examples among them), and stays quiet about exact commands."""

from __future__ import annotations

import pytest

from arca.host.policylint import init_data_warnings, warnings
from arca.wire.initdata import ExecPolicy

RISKY = {
    "docs example: echo glob": ([["/bin/sh", "-c", "echo *"]], "runs '/bin/sh'"),
    "docs example: cat secrets glob": ([["sh", "-c", "cat /run/arca/secrets/*"]], "runs 'sh'"),
    "any command": ([["..."]], "choose the program"),
    "wild program": ([["/usr/bin/*", "--serve"]], "choose the program"),
    "interpreter with any args": ([["python3", "..."]], "runs 'python3'"),
    "code option": ([["/app", "--eval", "*"]], "given to '--eval'"),
    "find -exec": ([["find", "/data", "-exec", "*", ";"]], "runs 'find'"),
}


@pytest.mark.parametrize("allow_args,words", RISKY.values(), ids=RISKY.keys())
def test_patterns_that_admit_host_code_warn(allow_args: list[list[str]], words: str) -> None:
    out = warnings(ExecPolicy(allow_args=tuple(tuple(a) for a in allow_args)))
    assert len(out) == 1 and words in out[0], out


@pytest.mark.parametrize("pattern", ["*", "LD_*", "PYTHON*", "BASH_ENV", "NODE_OPTIONS"])
def test_env_patterns_that_choose_code_warn(pattern: str) -> None:
    assert any(pattern in w for w in warnings(ExecPolicy(allow_env=(pattern,))))


def test_exact_commands_and_data_variables_are_quiet() -> None:
    policy = ExecPolicy(allow_args=(("/bin/app", "--serve"), ("/bin/app", "--port", "80*"),
                                    ("sleep", "*")),
                        allow_env=("LOG_LEVEL", "FEATURE_*"))
    assert warnings(policy) == []


def test_widenings_are_named() -> None:
    out = warnings(ExecPolicy(allow_exec=True, allow_hooks=True, allow_namespaces=("pid",),
                              allow_propagation=True))
    assert [w.split()[0] for w in out] == ["allow_exec", "allow_hooks", "allow_namespaces",
                                           "allow_propagation"]


def test_unauthenticated_kbs_is_named() -> None:
    raw = (b'version = "0.1.0"\n[data]\nkbs_url = "http://kbs"\n'
           b"agent = 'insecure_kbs = true'\n")
    assert ["not authenticated" in w for w in init_data_warnings(raw)] == [True]
    assert init_data_warnings(None) == []
