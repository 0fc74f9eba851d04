"""Policies see only the input they name, and remembered results are the results.

``arca.kbs.policy`` gives a policy the input subtrees its text references and reuses results
per (policy, data, projected input). Checked here: the static analysis on tricky texts
(strings, comments, look-alike names, variable keys, bare ``input``), and, as a property,
that the engine's answers equal a plain evaluation of the whole input by a fresh interpreter
for any input, first call and cached call alike.
"""

from __future__ import annotations

import json

import pytest
import regopy
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.kbs.policy import PolicyEngine, default_policy, input_paths, project

POLICIES = {
    "status": 'package policy\nimport rego.v1\ndefault allow := false\n'
              'allow if input.submods.cpu0["ear.status"] == "affirming"\n',
    "variable-key": 'package policy\nimport rego.v1\nallow if { some k; input.a[k] == 1 }\n',
    "bare": 'package policy\nimport rego.v1\nallow if count(input) == 2\n',
    "path-and-prefix": 'package policy\nimport rego.v1\n'
                       'allow if { input.a.b == 1; count(input.a) == 2 }\n',
    "escaped": 'package policy\nimport rego.v1\nallow if input["x\\"y"] == "q" # input\n',
    "string": 'package policy\nimport rego.v1\nallow if { input.a == "input"; input.c == 3 }\n',
}
DATA = {"reference": {}, "config": {}}


def _plain(text: str, inp: dict[str, object], q: str = "data.policy.allow") -> object:
    rego = regopy.Interpreter()
    rego.add_module("policy", text)
    rego.add_data_json(json.dumps(DATA, sort_keys=True))
    rego.set_input_term(json.dumps(inp))
    out = str(rego.query(f"x = {q}"))
    return None if out == "undefined" else json.loads(out).get("bindings", {}).get("x")


@pytest.mark.parametrize(("text", "paths"), [
    (POLICIES["status"], (("submods", "cpu0", "ear.status"),)),
    (POLICIES["variable-key"], (("a",),)),
    (POLICIES["bare"], None),
    (POLICIES["path-and-prefix"], (("a",), ("a", "b"))),
    (POLICIES["escaped"], (('x"y',),)),
    (POLICIES["string"], (("a",), ("c",))),
    ("package policy\nallow if my_input.a == data.input.b\n", ()),
    ("package policy\nallow if inputs.a\n", ()),
    ("package policy\nimport input.a.b as z\nallow if z\n", (("a", "b"),)),
    ("package policy\nimport input\nallow if input.a\n", None),
    ("package policy\nallow if object.get(input, \"a\", 0)\n", None),
    ("package policy\nallow if input[\"a\"][x]\n", (("a",),)),
    ("package policy\nallow if input[`raw`]\n", None),
    ("package policy\n# a comment about input\nallow if input .a\n", None),
])
def test_input_paths(text, paths):
    assert input_paths(text) == paths


def test_default_policies_read_little_of_their_input():
    assert input_paths(default_policy("resource")) == (("submods", "cpu0", "ear.status"),)
    assert ("claims",) in input_paths(default_policy("attestation"))


def test_project_keeps_whole_subtrees_and_misses_nothing():
    inp = {"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": {"f": 2}}
    assert project(inp, (("a",), ("a", "b"))) == {"a": {"b": 1, "c": [1, 2]}}
    assert project(inp, (("e", "f"), ("d", "z"), ("q",))) == {"e": {"f": 2}}
    assert project(inp, None) is inp


JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(
    ["affirming", "warning", "q", "input"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["a", "b", "c", "x\"y", "cpu0", "ear.status"]), inner,
                      max_size=3), max_leaves=12)
INPUTS = st.fixed_dictionaries({}, optional={
    "a": JSON, "c": JSON, "x\"y": JSON,
    "submods": st.fixed_dictionaries({}, optional={"cpu0": st.fixed_dictionaries(
        {}, optional={"ear.status": JSON})})})


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(sorted(POLICIES)), inputs=st.lists(INPUTS, min_size=1, max_size=4))
def test_engine_equals_plain_evaluation_of_the_whole_input(name, inputs):
    engine = PolicyEngine()
    text = POLICIES[name]
    for inp in inputs + inputs:  # the second round is served from the result cache
        assert engine.query(text, DATA, inp, "data.policy.allow") == _plain(text, inp)


def test_results_are_keyed_on_data_and_not_reused_for_time_dependent_policies():
    engine = PolicyEngine()
    text = 'package policy\nimport rego.v1\nallow if input.a == data.config.want\n'
    assert engine.allow(text, {"config": {"want": 1}}, {"a": 1}) is True
    assert engine.allow(text, {"config": {"want": 2}}, {"a": 1}) is False
    timed = 'package policy\nimport rego.v1\nallow if time.now_ns() > input.t\n'
    assert engine.allow(timed, DATA, {"t": 0}) is True
    assert not engine._compiled(timed, json.dumps(DATA, sort_keys=True),
                                "data.policy.allow").deterministic
    assert engine._compiled(text, json.dumps(DATA, sort_keys=True),
                            "data.policy.allow").deterministic
