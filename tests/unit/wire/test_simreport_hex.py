"""Strict hex in sim reports: exactly ``2 * size`` characters of ``[0-9a-f]``. ``bytes.fromhex``
alone accepts blanks between bytes, so a report field could have two spellings."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.host.simtee.platform import report_json
from arca.wire.errors import WireFormatError
from arca.wire.simreport import SimReport

GOOD = report_json(SimReport(bytes(range(48)), bytes(48), bytes(range(64)), "td", "plat"))


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(["measurement", "init_data_hash", "report_data"]),
       st.text(alphabet="0123456789abcdefABCDEF \t\n\x0bxg-+", max_size=140))
def test_only_exact_lowercase_hex_is_accepted(key: str, value: str) -> None:
    size = len(GOOD[key]) // 2
    obj = {**GOOD, key: value}
    valid = len(value) == 2 * size and all(c in "0123456789abcdef" for c in value)
    if valid:
        assert getattr(SimReport.from_json(obj), key) == bytes.fromhex(value)
    else:
        with pytest.raises(WireFormatError, match=f"{key} must be {size} bytes of lowercase hex"):
            SimReport.from_json(obj)


@pytest.mark.parametrize("mutate", [
    lambda v: v[:2] + " " + v[2:-1],   # a blank instead of the last digit: same length
    lambda v: " " + v[:-1],
    lambda v: v[:-2] + "\n",
    lambda v: v.upper(),
    lambda v: v[:-1] + "\u0663",        # ARABIC-INDIC DIGIT THREE: isdigit, not hex
    lambda v: 12,
])
def test_near_misses_are_refused(mutate) -> None:  # noqa: ANN001
    with pytest.raises(WireFormatError):
        SimReport.from_json({**GOOD, "report_data": mutate(GOOD["report_data"])})
