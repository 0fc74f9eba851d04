"""Property tests of the DCAP parsers and verifiers: only typed errors, and any change to a
signed byte of a real quote is rejected."""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arca.verifier.collateral import DirectoryCollateral
from arca.verifier.dcap import SgxVerifier, TdxVerifier, parse_quote
from arca.verifier.dcap.pck import ChainVerifier, parse_sgx_extension_der
from arca.verifier.dcap.signed_collateral import SignedCollateral
from arca.verifier.dcap.verify import DcapVerifier
from arca.wire.errors import ArcaError
from tests.support.dcap_factory import sgx_extension

DEV = pathlib.Path(__file__).resolve().parents[3].parent / "shared" / "vectors" / "dev"
CASES = ["sgx-dcapqvl-1", "tdx-dcapqvl-1", "tdx-gotdxguest-2"]
FUZZ = settings(max_examples=int(os.environ.get("DCAP_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
needs_vectors = pytest.mark.skipif(not DEV.is_dir(), reason="../shared/vectors absent")


def _case(name: str):
    folder = DEV / name
    exp = json.loads((folder / "expected.json").read_text())
    at = dt.datetime.fromisoformat(exp["verify_at"].replace("Z", "+00:00"))
    cls = SgxVerifier if name.startswith("sgx") else TdxVerifier
    return (folder / "quote.bin").read_bytes(), cls(DirectoryCollateral(folder)), at


def _pem_region(quote: bytes) -> tuple[int, int]:
    """Offsets of the PCK chain PEM text inside the quote (not itself a signed byte string)."""
    q = parse_quote(quote)
    start = quote.index(q.signature.cert_data)
    return start, start + len(q.signature.cert_data)


def _only_pem_mutations_accepted(quote: bytes, verifier: DcapVerifier, at: dt.datetime) -> None:
    """The unmodified quote is accepted, and any single-byte change is rejected unless it is
    in the PEM text of the embedded chain, the one part that may change without changing a
    signed byte (a newline turned into other whitespace, base64 padding bits); everything
    else is signed, bound to a signature, or a length field."""
    verifier.verify(quote, at=at)
    pem_start, pem_end = _pem_region(quote)

    @FUZZ
    @given(pos=st.integers(0, len(quote) - 1), flip=st.integers(1, 255))
    def check(pos: int, flip: int) -> None:
        mutated = bytearray(quote)
        mutated[pos] ^= flip
        try:
            verifier.verify(bytes(mutated), at=at)
        except ArcaError:
            return
        assert pem_start <= pos < pem_end, f"mutation at {pos} accepted"

    check()


@FUZZ
@given(data=st.binary(max_size=6000))
def test_random_bytes_only_typed_errors(data: bytes) -> None:
    for cls in (SgxVerifier, TdxVerifier):
        with pytest.raises(ArcaError):
            cls(None).verify(data)


@FUZZ
@given(version=st.sampled_from([3, 4, 5]), tee=st.sampled_from([0, 0x81]),
       tail=st.binary(max_size=3000))
def test_plausible_headers_only_typed_errors(version: int, tee: int, tail: bytes) -> None:
    head = struct.pack("<HHIHH", version, 2, tee, 0, 0) + \
        bytes.fromhex("939a7233f79c4ca9940a0db3957f0607") + bytes(20)
    with pytest.raises(ArcaError):
        parse_quote(head + tail) and TdxVerifier(None).verify(head + tail)


@needs_vectors
@pytest.mark.parametrize("case", CASES)
def test_single_byte_mutations_of_real_quotes(case: str) -> None:
    _only_pem_mutations_accepted(*_case(case))


@needs_vectors
@pytest.mark.parametrize("case", CASES)
def test_every_signed_byte_rejects(case: str) -> None:
    """Exhaustive over the signed header+body and the signature data before the PEM chain."""
    quote, verifier, at = _case(case)
    pem_start, _ = _pem_region(quote)
    for pos in range(pem_start):
        mutated = bytearray(quote)
        mutated[pos] ^= 0x01
        with pytest.raises(ArcaError):
            verifier.verify(bytes(mutated), at=at)


@FUZZ
@given(data=st.binary(max_size=600))
def test_sgx_extension_parser_only_typed_errors(data: bytes) -> None:
    with pytest.raises(ArcaError):
        parse_sgx_extension_der(data)


@FUZZ
@given(pos=st.integers(0, 10_000), flip=st.integers(1, 255))
def test_sgx_extension_mutations(pos: int, flip: int) -> None:
    raw = bytearray(sgx_extension())
    raw[pos % len(raw)] ^= flip
    try:
        parse_sgx_extension_der(bytes(raw))
    except ArcaError:
        pass


@needs_vectors
@pytest.mark.parametrize(("name", "key"), [("tcb_info.json", "tcbInfo"),
                                           ("qe_identity.json", "enclaveIdentity")])
def test_collateral_mutations_rejected(name: str, key: str) -> None:
    folder = DEV / "tdx-dcapqvl-1"
    raw = (folder / name).read_bytes()
    chain = (folder / name.replace(".json", "_issuer_chain.pem")).read_bytes()
    at = dt.datetime(2025, 7, 4, 10, 16, 31, tzinfo=dt.UTC)
    from arca.verifier.dcap import INTEL_SGX_ROOT_CA_SPKI_SHA256
    signed = SignedCollateral(ChainVerifier([INTEL_SGX_ROOT_CA_SPKI_SHA256]))
    load = signed.tcb_info if key == "tcbInfo" else signed.qe_identity
    load(raw, chain, at)
    start = raw.index(b"{", 1)
    end = raw.rindex(b',"signature"')

    @FUZZ
    @given(pos=st.integers(0, len(raw) - 1), flip=st.integers(1, 127))
    def check(pos: int, flip: int) -> None:
        mutated = bytearray(raw)
        mutated[pos] ^= flip
        try:
            load(bytes(mutated), chain, at)
        except ArcaError:
            return
        assert not start <= pos < end, f"mutation of signed byte {pos} accepted"

    check()


@FUZZ
@given(doc=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                        lambda c: st.lists(c, max_size=4) |
                        st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=20))
def test_collateral_json_shapes_only_typed_errors(doc: object) -> None:
    from arca.verifier.dcap.signed_collateral import parse_qe_identity, parse_tcb_info
    if isinstance(doc, dict):
        for parser in (parse_tcb_info, parse_qe_identity):
            with pytest.raises(ArcaError):
                parser(doc)


@pytest.mark.parametrize("fmt", [{"tee": "sgx"}, {"tee": "tdx"}, {"tee": "tdx", "td15": True}],
                         ids=["sgx-v3", "tdx-v4", "tdx-v5"])
def test_single_byte_mutations_of_built_quotes(fmt: dict) -> None:
    """Same property on factory quotes, so it also runs where ../shared is absent."""
    from tests.support.dcap_factory import DcapFactory
    bundle = DcapFactory().build(**fmt)
    _only_pem_mutations_accepted(bundle.quote, bundle.verifier(), bundle.at)
