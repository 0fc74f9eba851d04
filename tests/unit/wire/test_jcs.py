from __future__ import annotations

import math

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from arca.wire.jcs import canonicalize

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text(),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)


@given(json_values)
def test_matches_reference_implementation(value: object) -> None:
    assert canonicalize(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "value,expected",
    [
        ({"b": 1, "a": [True, None]}, b'{"a":[true,null],"b":1}'),
        (-(2**53) + 1, b"-9007199254740991"),
        ({"\u20ac": 1, "\r": 2, "\U0001f600": 3, "\ufb33": 4}, None),
    ],
)
def test_known_forms(value: object, expected: bytes | None) -> None:
    assert canonicalize(value) == (expected or rfc8785.dumps(value))


@pytest.mark.parametrize("bad", [math.nan, math.inf, 2**60, {1: 2}, object(), 1.5, 0.0, 1e21,
                                 [1, 2.0], {"a": -0.0}])
def test_rejects_what_has_no_canonical_form(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        canonicalize(bad)


@given(st.floats())
def test_floats_are_refused_not_misformatted(value: float) -> None:
    """No canonical document of Arca's has a float; one showing up is an error, never a
    silently different encoding from another implementation's."""
    with pytest.raises(TypeError, match="float"):
        canonicalize({"x": [value]})
