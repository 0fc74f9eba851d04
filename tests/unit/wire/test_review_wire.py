"""Review: deeply nested TOML (attacker-sized, well under the size caps) is a format error of
the parsers, never a RecursionError (a traceback in the runtime, a 500 at the KBS)."""

from __future__ import annotations

import pytest

from arca.kbs.protocol import init_data_digest
from arca.wire.errors import WireFormatError
from arca.wire.initdata import InitData, InitDataError

DEEP = "a = " + "[" * 100_000


def test_kbs_init_data_digest_refuses_deep_nesting() -> None:
    with pytest.raises(WireFormatError, match="not TOML"):
        init_data_digest(DEEP)


@pytest.mark.parametrize("doc", [
    DEEP,
    'version = "0.1.0"\n[data]\npolicy = \'\'\'' + DEEP + "'''\n",
    'version = "0.1.0"\n[data]\nagent = \'{"a": ' + "[" * 100_000 + "'\n",
])
def test_init_data_parse_refuses_deep_nesting(doc: str) -> None:
    with pytest.raises(InitDataError):
        InitData.parse(doc.encode())
