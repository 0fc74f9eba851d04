"""``arca.kbs.initdata``: the body is digested, compared with the verified claim at exact
length, and only then parsed into a JSON-safe document (issue 13, item 9)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arca.kbs.initdata import bound_document, expected_hash
from arca.wire.errors import BindingMismatch, WireFormatError

BODY = 'version = "0.1.0"\nalgorithm = "sha256"\n[data]\nwhen = 2024-01-02T03:04:05Z\n'


def test_bound_body_is_parsed_with_dates_as_strings() -> None:
    want = expected_hash(BODY, 48)
    assert want == hashlib.sha256(BODY.encode()).digest() + bytes(16)
    doc = bound_document(BODY, want, {"init_data": want.hex()})
    assert doc == {"version": "0.1.0", "algorithm": "sha256",
                   "data": {"when": "2024-01-02T03:04:05+00:00"}}


@pytest.mark.parametrize("claim", [None, "", "00" * 48, "AB" * 48])
def test_a_claim_that_is_not_exactly_the_hash_is_a_binding_mismatch(claim: str | None) -> None:
    want = expected_hash(BODY, 48)
    with pytest.raises(BindingMismatch):
        bound_document(BODY, want, {"init_data": claim})
    with pytest.raises(BindingMismatch):  # a prefix or an upper-case spelling is not equal
        bound_document(BODY, want, {"init_data": want.hex()[:-2]})


def test_non_finite_numbers_and_oversized_bodies_are_refused() -> None:
    body = 'version = "0.1.0"\nx = inf\n'
    want = expected_hash(body, 48)
    with pytest.raises(WireFormatError, match="inf"):
        bound_document(body, want, {"init_data": want.hex()})
    with pytest.raises(WireFormatError, match="exceeds"):
        expected_hash("#" * (256 * 1024 + 1), 48)
    with pytest.raises(WireFormatError, match="Unicode"):
        expected_hash('version = "\ud800"', 48)


@given(st.text(st.characters(codec=None, exclude_categories=()), max_size=200))
def test_any_text_is_a_wire_error_or_a_bound_document(text: str) -> None:
    try:
        want = expected_hash(text, 32)
    except WireFormatError:
        return
    try:
        doc = bound_document(text, want, {"init_data": want.hex()})
    except WireFormatError:
        return
    assert isinstance(doc, dict)
