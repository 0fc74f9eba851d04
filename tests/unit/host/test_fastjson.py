"""``arca._internal.fastjson`` (the host fast paths' owned json, ADR 0056) against the stdlib:
the same value or the same error (type and message) as ``json.loads``/``json.dumps``, on
generated values, on valid documents, on documents built from the pieces that trip parsers
(brackets, quotes, escapes, NaN/Infinity, control characters, BOMs, UTF-16/32, trailing data)
and on deep nesting; and the owned reader and writer answer themselves (not json behind them)
for the plain JSON Arca writes."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca._internal import fastjson as lean


@pytest.fixture(autouse=True, scope="module")
def unlimited_owned_reader() -> Iterator[None]:
    """Every document here goes through the owned reader first (its per-process budget would
    otherwise hand the later examples straight to json)."""
    saved, lean._budget[0] = lean._budget[0], 1 << 62
    yield
    lean._budget[0] = saved


SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
           | st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
    st.text(max_size=6), kids, max_size=4), max_leaves=15)
PIECES = st.sampled_from([
    "{", "}", "[", "]", ",", ":", '"', '"a"', "\\", "\\u00e9", "\\ud800", "\\x", "1", "-", "0",
    "1.5", "1e400", "-0", ".5", "01", "NaN", "Infinity", "-Infinity", "nan", "true", "false",
    "null", "tru", " ", "\n", "\t", "\r", "\x0b", "\x00", "\x1f", "\ufeff", "é", "\ud800", "//",
])


def outcome(fn: Any, *args: Any, **kw: Any) -> tuple[str, str]:
    try:
        return "ok", repr(fn(*args, **kw))  # repr: nan == nan, -0.0 != 0.0
    except Exception as e:  # noqa: BLE001 - the error itself is compared
        return type(e).__name__, str(e)


@settings(max_examples=400, deadline=None)
@given(VALUES, st.booleans())
def test_dumps_and_loads_equal_json_on_values(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert lean.json_dumps(value, ensure_ascii=ascii_only) == text
    assert outcome(lean.json_loads, text) == outcome(json.loads, text)
    assert outcome(lean.json_loads, text.encode()) == outcome(json.loads, text.encode())


@settings(max_examples=1000, deadline=None)
@given(st.lists(PIECES, max_size=12).map("".join))
def test_loads_equals_json_on_hostile_text(doc: str) -> None:
    assert outcome(lean.json_loads, doc) == outcome(json.loads, doc)


@settings(max_examples=300, deadline=None)
@given(st.lists(PIECES, max_size=10).map("".join),
       st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32",
                        "utf-32-le", "utf-32-be"]))
def test_loads_equals_json_on_bytes_in_any_encoding(doc: str, encoding: str) -> None:
    data = doc.encode(encoding, "surrogatepass")
    assert outcome(lean.json_loads, data) == outcome(json.loads, data)
    assert outcome(lean.json_loads, bytearray(data)) == outcome(json.loads, bytearray(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_loads_equals_json_on_arbitrary_bytes(data: bytes) -> None:
    assert outcome(lean.json_loads, data) == outcome(json.loads, data)


@settings(max_examples=300, deadline=None)
@given(VALUES, st.integers(0, 200), st.sampled_from(["", "x", "]", "}", ",", " 1", "\x00"]))
def test_a_cut_or_extended_document_gets_the_same_answer(value: Any, cut: int,
                                                         tail: str) -> None:
    doc = json.dumps(value)
    for bad in (doc[:cut], doc[:cut] + tail + doc[cut:], doc + tail):
        assert outcome(lean.json_loads, bad) == outcome(json.loads, bad)


def test_errors_are_json_s_own() -> None:
    for bad in ("", "[1,", "{} {}", "\ufeff{}", '"\x01"', "[" * 100_000, "1" * 5000):
        want = outcome(json.loads, bad)
        assert want[0] != "ok" and outcome(lean.json_loads, bad) == want
    for bad in (b"\xff", 3, None):
        assert outcome(lean.json_loads, bad) == outcome(json.loads, bad)
    assert outcome(lean.json_loads, "[" * 100_000)[0] == "RecursionError"
    assert outcome(lean.json_loads, "1 2")[0] == "JSONDecodeError"  # a ValueError
    nan = lean.json_loads('[NaN, Infinity, -Infinity]')
    assert math.isnan(nan[0]) and nan[1:] == [math.inf, -math.inf]


def test_dumps_refuses_as_json_does() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    for bad in (1j, {1j: 1}, {(1,): 2}, [b"x"], {1}, cycle, deep, object()):
        want = outcome(json.dumps, bad)
        assert want[0] != "ok" and outcome(lean.json_dumps, bad) == want
    odd = {1: 1, 2.5: 2, False: 3, None: 4, "é\u2028": [math.nan, -math.inf, 1e300, -0.0]}
    assert lean.json_dumps(odd) == json.dumps(odd)
    assert lean.json_dumps(odd, ensure_ascii=False) == json.dumps(odd, ensure_ascii=False)



PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.tuples(kids, kids)
    | st.dictionaries(st.text(max_size=6), kids, max_size=4), max_leaves=15)


@settings(max_examples=400, deadline=None)
@given(PLAIN, st.booleans(), st.sampled_from([None, 1, 2, "\t"]))
def test_the_owned_parts_answer_plain_json_themselves(value: Any, ascii_only: bool,
                                                      indent: Any) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    parsed, end = lean._value(text, 0)  # no fallback here: a refusal raises
    assert end == len(text) and repr(parsed) == repr(json.loads(text))
    out: list[str] = []
    lean._dump(value, out, lean._OUT_ASCII if ascii_only else lean._OUT, ascii_only)
    assert "".join(out) == json.dumps(value, ensure_ascii=ascii_only)


def test_plain_records_never_import_json() -> None:
    import subprocess
    import sys

    code = ("import sys; from arca._internal.fastjson import json_dumps, json_loads; "
            "rec = {'id': 'a' * 64, 'args': ('sh', '-c', 'echo \"hi\"\\n'), 'pid': 7, "
            "'exit_code': None, 'tty': False, 'cpu': 1.5e-3, 'env': ['A=\\u00e9\\t']}; "
            "assert json_loads(json_dumps(rec)) == {**rec, 'args': list(rec['args'])}; "
            "assert 'json' not in sys.modules, 'json imported'; "
            "json_loads('[NaN]'); assert 'json' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_past_its_budget_the_reader_hands_over_to_json() -> None:
    import subprocess
    import sys

    code = ("import sys; from arca._internal import fastjson as f; doc = '[' + '1, ' * 999 + '1]'; "
            "n = f.OWNED_BUDGET_CHARS // len(doc); "
            "assert all(f.json_loads(doc) == [1] * 1000 for _ in range(n)); "
            "assert 'json' not in sys.modules; "
            "assert f.json_loads(doc) == [1] * 1000 and 'json' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
