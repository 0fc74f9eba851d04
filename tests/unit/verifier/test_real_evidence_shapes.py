"""Shapes real platforms give evidence in, beyond the byte-exact dev vectors (ADR 0062).

Each case starts from a real ``dev/`` vector (vendor-signed, verified against the real roots)
and changes only what a real platform changes without touching a signed byte — e.g. the zero
padding of a quote handed out in a fixed-size buffer — or, where a signed byte must change
(SNP reserved fields), re-signs with the throw-away AMD PKI of ``tests/support/snp_factory``
(labelled ``test PKI``). Whatever the shape, a byte the verifier cannot account for is a clear
refusal, never a silent accept.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib

import pytest

from arca.errors import MalformedEvidence
from arca.verifier.collateral import DirectoryCollateral
from arca.verifier.dcap import SgxVerifier, TdxVerifier

VECTORS = pathlib.Path(__file__).resolve().parents[3].parent / "shared" / "vectors"
DEV = VECTORS / "dev"
QUOTE_CASES = ["sgx-dcapqvl-1", "tdx-dcapqvl-1", "tdx-gotdxguest-2"] if DEV.is_dir() else []
needs_vectors = pytest.mark.skipif(not DEV.is_dir(), reason="../shared/vectors absent")


def _quote_case(name: str) -> tuple[bytes, SgxVerifier | TdxVerifier, dt.datetime, dict]:
    folder = DEV / name
    exp = json.loads((folder / "expected.json").read_text())
    at = dt.datetime.fromisoformat(exp["verify_at"].replace("Z", "+00:00"))
    cls = SgxVerifier if name.startswith("sgx") else TdxVerifier
    return (folder / "quote.bin").read_bytes(), cls(DirectoryCollateral(folder)), at, exp


# -- DCAP: a quote in a fixed-size buffer ----------------------------------------------------


@needs_vectors
@pytest.mark.parametrize("case", QUOTE_CASES)
@pytest.mark.parametrize("pad", [1, 70, 8000 - 4936])
def test_real_quote_followed_by_zero_padding_verifies(case: str, pad: int) -> None:
    # The TDX guest driver and QGS hand quotes out in fixed buffers (Trustee's td-quote.bin and
    # dcap-qvl's sample carry 70 zero bytes, a COS guest's 3065): same claims, same status.
    quote, verifier, at, exp = _quote_case(case)
    plain = verifier.verify(quote, at=at)
    padded = verifier.verify(quote + bytes(pad), at=at)
    assert padded.to_dict() == plain.to_dict()
    assert padded.values["report_data"] == exp["report_data"]


@needs_vectors
@pytest.mark.parametrize("case", QUOTE_CASES)
@pytest.mark.parametrize("tail", [b"\x01", bytes(69) + b"\x01", b"extra bytes"])
def test_anything_but_zeros_after_a_quote_is_refused(case: str, tail: bytes) -> None:
    quote, verifier, at, _ = _quote_case(case)
    with pytest.raises(MalformedEvidence, match="only zero padding may follow a quote"):
        verifier.verify(quote + tail, at=at)
