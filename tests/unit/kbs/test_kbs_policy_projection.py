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
from hypothesis import example, given, settings
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
    ('package policy\nallow if $"{input.a}" == "1"\n', None),            # template string
    ("package policy\nallow if $`{input.a}` == `1`\n", None),            # raw template
    ("package policy\nallow if h with input.a as 1\nh if input.b\n", None),  # with
    ('package policy\nallow if input[concat("", ["a"])]\n', None),       # computed key
    ("package policy\nallow if walk(input, [_, 1])\n", None),            # walk
    ("package policy\nallow if input.a @ 1\n", None),                     # unknown character
    ('package policy\nallow if input.a == "unterminated\n', None),       # broken string
    ("package policy\nallow if input.a# comment\n", (("a",),)),
    ('package policy\nallow if input["a"]["\\u0062"].c\n', (("a", "b", "c"),)),
    ("package policy\nallow if x.input.a\nallow if input.d\n", (("d",),)),  # a field "input"
])
def test_input_paths(text, paths):
    """What a policy reads of its input; everything (None) when unsure."""
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


# -- generated policies (issue 13, item 10) -----------------------------------------------------
#
# The projection must be sound for every construct of the language: a policy may reach its input
# through template strings, walk, object.get, computed keys, with, comprehensions, every,
# negation, raw strings... Generated policies combine such literals (negated or not) over
# generated paths; the engine (projection + result cache) must answer exactly as a plain
# evaluation of the whole input, for several inputs, first and cached calls alike.

SEGS = ["a", "b", "c", 'x"y']
#: Literal kinds; the ones that reach input in ways a text scan can miss come more often.
KINDS = (["eq", "walk", "objget", "objget_path", "computed", "computed_concat", "with",
          "with_whole", "comprehension", "object_comprehension", "every", "bare_count", "raw",
          "string_and_comment", "import_like", "some_in"] + ["template"] * 4)
CONSTS = ["1", '"q"', "true", "null", '"evil"', "2"]
#: What constants look like inside a template string.
SHOWN = ["1", "q", "true", "null", "evil"]


def _ref(draw: st.DrawFn) -> str:
    depth = draw(st.sampled_from([1, 1, 1, 2, 3]))
    segs = [draw(st.sampled_from(SEGS)) for _ in range(depth)]
    out = "input"
    for s in segs:
        if s.isidentifier() and draw(st.booleans()):
            out += "." + s
        else:
            out += "[" + json.dumps(s) + "]"
    return out


#: Literal kinds -> (helper rule or "", literal), as ``str.format`` templates over one draw
#: each of: ``ref``/``ref2`` (input references), ``c``/``c2`` (constants), ``seg`` (a name,
#: quoted), ``path`` (a list of names), ``shown`` (a constant inside a template string),
#: ``raw`` (a name as a raw string), ``count`` and ``n`` (the helper's number).
LITERALS = {
    "eq": ("", "{ref} == {c}"),
    "template": ("", '$"{{{ref}}}" == "{shown}"'),
    "walk": ("h{n} if {{ walk(input, [_, v]); v == {c} }}", "h{n}"),
    "objget": ("", "object.get(input, {seg}, {c}) == {c}"),
    "objget_path": ("", "object.get(input, {path}, 0) == {c}"),
    "computed": ("", "some k in [{seg}]; input[k] == {c}"),
    "computed_concat": ("", 'input[concat("", [{seg}])] == {c}'),
    "with": ("h{n} if {ref} == {c}", "h{n} with {ref2} as {c2}"),
    "with_whole": ("h{n} if input.a == {c}", 'h{n} with input as {{"a": {c2}}}'),
    "comprehension": ("", "count([x | some x in {ref}; x == {c}]) > 0"),
    "object_comprehension": ("", "count({{k: v | some k, v in input; v == {c}}}) > 0"),
    "every": ("", "every x in {ref} {{ x != {c} }}"),
    "bare_count": ("", "count(input) == {count}"),
    "raw": ("", "input[`{raw}`] == {c}"),
    "string_and_comment": ("", '"input.a" != {ref} # input.b'),
    "import_like": ("h{n} := {ref}", "h{n} == {c}"),
    "some_in": ("", "some v in {ref}; v == {c}"),
}


@st.composite
def _literal(draw: st.DrawFn, helpers: list[str]) -> str:
    values = {
        "ref": _ref(draw), "c": draw(st.sampled_from(CONSTS)),
        "seg": json.dumps(draw(st.sampled_from(SEGS))), "n": len(helpers),
        "path": json.dumps(draw(st.lists(st.sampled_from(SEGS), min_size=1, max_size=3))),
        "ref2": _ref(draw), "c2": draw(st.sampled_from(CONSTS)),
        "shown": draw(st.sampled_from(SHOWN)), "raw": draw(st.sampled_from(SEGS[:3])),
        "count": draw(st.integers(0, 3))}
    kind = draw(st.sampled_from(KINDS))
    helper, lit = (part.format(**values) for part in LITERALS[kind])
    if helper:
        helpers.append(helper)
    n = values["n"]
    if draw(st.booleans()):
        if ";" in lit or " # " in lit or kind == "every":
            helpers.append(f"g{n} if {{ {lit} }}" if " # " not in lit
                           else f"g{n} if {{\n\t{lit}\n}}")
            lit = f"g{n}"
        lit = "not " + lit
    return lit


@st.composite
def _policy(draw: st.DrawFn) -> str:
    helpers: list[str] = []
    rules = []
    for _ in range(draw(st.integers(1, 2))):
        lits = [draw(_literal(helpers)) for _ in range(draw(st.sampled_from([1, 1, 2, 3])))]
        rules.append("allow if {\n" + "".join(f"\t{lit}\n" for lit in lits) + "}")
    return ("package policy\nimport rego.v1\ndefault allow := false\n"
            + "\n".join(helpers + rules) + "\n")


def _plain_or_error(text: str, inp: dict[str, object]) -> object:
    try:
        return _plain(text, inp)
    except (regopy.RegoError, ValueError):
        return "error"


def _engine_or_error(engine: PolicyEngine, text: str, inp: dict[str, object]) -> object:
    from arca.kbs.policy import PolicyError

    try:
        return engine.query(text, DATA, inp, "data.policy.allow")
    except PolicyError:
        return "error"


_LEAF = st.sampled_from([1, "q", True, None, "evil", 2])
_TREE = st.recursive(_LEAF, lambda inner: st.dictionaries(st.sampled_from(SEGS), inner,
                                                          min_size=1, max_size=4)
                     | st.lists(inner, max_size=2), max_leaves=16)


def _saturated(depth: int, leaf: object) -> dict[str, object]:
    """Every path of ``depth`` names leads to ``leaf``: whatever a policy refers to exists."""
    return {s: leaf if depth == 1 else _saturated(depth - 1, leaf) for s in SEGS}


#: Inputs over the same names and constants as the policies, so references hit: random trees,
#: and trees where every path of some depth holds the same constant.
RICH_INPUTS = st.builds(_saturated, st.sampled_from([1, 1, 2, 3]), _LEAF) | st.dictionaries(
    st.sampled_from(SEGS), _TREE, max_size=4)
#: The reported escape, always among the examples.
_TEMPLATE_ESCAPE = ("package policy\nimport rego.v1\ndefault allow := false\n"
                    'allow if {\n\tnot $"{input.a}" == "1"\n}\n')


@settings(max_examples=200, deadline=None)
@example(text=_TEMPLATE_ESCAPE, inputs=[{"a": 1}, {"a": "q"}])
@given(text=_policy(), inputs=st.lists(RICH_INPUTS, min_size=1, max_size=4))
def test_generated_policies_equal_plain_evaluation(text, inputs):
    engine = PolicyEngine()
    for inp in inputs + inputs:  # the second round is served from the result cache
        assert _engine_or_error(engine, text, inp) == _plain_or_error(text, inp), text


@pytest.mark.parametrize("construct", [
    '$"{input.banned}" == "true"',                      # template string
    'input[concat("", ["ban", "ned"])] == true',        # computed key
    'object.get(input, "banned", false) == true',       # object.get on the whole input
    'walk(input, [["banned"], true])',                  # walk
    'some k, v in input; k == "banned"; v == true',     # iteration over the whole input
])
def test_negated_checks_through_hidden_references_fail_closed(construct):
    """The reported escape: a negated check on input the projection did not see (a template
    string) was evaluated on a projection without it, so ``not ...`` held: allow."""
    text = ("package policy\nimport rego.v1\ndefault allow := false\n"
            f"banned_by_construct if {{ {construct} }}\n"
            "allow if {\n\tinput.submods.ok == true\n\tnot banned_by_construct\n}\n")
    inp = {"submods": {"ok": True}, "banned": True}
    assert _plain(text, inp) is False
    assert PolicyEngine().allow(text, DATA, inp) is False


@pytest.mark.parametrize(("text", "cached"), [
    ("package policy\nallow if input.a\n", True),
    ("package policy\nallow if time.now_ns() > 0\n", False),
    ('package policy\nallow if time["now_ns"]() > 0\n', False),
    ("package policy\nallow if rand.intn(\"x\", 2) == 1\n", False),
    ("package policy\n# time.now_ns() in a comment\nallow if input.a\n", True),
    ('package policy\nallow if $"{time.now_ns()}" != ""\n', False),  # cannot scan: no reuse
])
def test_results_are_reused_only_for_deterministic_policies(text, cached):
    from arca.kbs.policy_input import deterministic

    assert deterministic(text) is cached
