"""DCAP certificate chains in any order, collateral JSON with other member order and
whitespace: built from every SGX/TDX case of ../shared/vectors/dev, each variant gives the
case's own outcome; extra, missing or ambiguous links are refused.

Upstream behaviour reproduced: Intel's QVL (``SGXDataCenterAttestationPrimitives``,
``QuoteVerification/QVL/Src/AttestationLibrary/src/Verifiers/PckCertVerifier`` and
``CertificateChain``) identifies root, intermediate and PCK certificate by subject/issuer,
not by their position in the quote's certification data.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil

import pytest
from cryptography import x509

from arca.errors import ChainInvalid, CollateralError, SignatureInvalid
from arca.verifier.dcap.chainorder import order_chain
from tests.unit.verifier.test_dcap_vectors import CASES, DEV, _load, _outcome, _verifier

pytestmark = pytest.mark.skipif(not CASES, reason="../shared/vectors absent")
PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def _reorder_in_place(raw: bytes, order: tuple[int, ...]) -> bytes:
    """The same bytes with the PEM blocks permuted (separators stay: the length is kept)."""
    blocks = list(PEM.finditer(raw))
    out, pos = bytearray(), 0
    for slot, src in zip(blocks, order, strict=True):
        out += raw[pos:slot.start()] + blocks[src].group()
        pos = slot.end()
    out += raw[pos:]
    assert len(out) == len(raw)
    return bytes(out)


def _certs(raw: bytes) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(m.group()) for m in PEM.finditer(raw)]


@pytest.mark.parametrize("case", CASES)
def test_pck_chain_in_any_order_gives_the_same_outcome(case):
    exp, quote, at = _load(case)
    folder = DEV / case
    want = _outcome(_verifier(exp, folder), quote, at)[:3]
    n = len(PEM.findall(quote))
    assert n >= 3
    for order in itertools.permutations(range(n)):
        variant = _reorder_in_place(quote, order)
        got = _outcome(_verifier(exp, folder), variant, at)[:3]
        assert got == want, (case, order)


@pytest.mark.parametrize("case", CASES)
def test_collateral_issuer_chains_reordered_and_json_respaced(case, tmp_path):
    exp, quote, at = _load(case)
    want = _outcome(_verifier(exp, DEV / case), quote, at)[:3]
    col = tmp_path / case
    shutil.copytree(DEV / case, col)
    for name in ("tcb_info_issuer_chain.pem", "qe_identity_issuer_chain.pem"):
        if (col / name).exists():
            raw = (col / name).read_bytes()
            (col / name).write_bytes(_reorder_in_place(raw, tuple(
                reversed(range(len(PEM.findall(raw)))))))
    for name, key in (("tcb_info.json", "tcbInfo"), ("qe_identity.json", "enclaveIdentity")):
        text = (col / name).read_text()
        start = text.index("{", text.index(f'"{key}"'))
        inner = json.JSONDecoder().raw_decode(text, start)
        signed = text[start:inner[1]]
        sig = json.loads(text)["signature"]
        # members swapped, whitespace everywhere outside the signed object
        (col / name).write_text(f'\n  {{ "signature" :\t"{sig}" ,\r\n  "{key}"  :  {signed}\n}}\n ')
    assert _outcome(_verifier(exp, col), quote, at)[:3] == want


def test_whitespace_inside_the_signed_object_is_refused(tmp_path):
    case = next(c for c in CASES if (DEV / c / "tcb_info.json").exists())
    exp, quote, at = _load(case)
    col = tmp_path / case
    shutil.copytree(DEV / case, col)
    text = (col / "tcb_info.json").read_text()
    (col / "tcb_info.json").write_text(text.replace('"tcbInfo":{"', '"tcbInfo":{ "', 1))
    with pytest.raises(SignatureInvalid):
        _verifier(exp, col).verify(quote, at=at)


def _chain() -> list[x509.Certificate]:
    _, quote, _ = _load(CASES[0])
    return order_chain(tuple(_certs(quote)), "pck_chain")  # type: ignore[return-value]


def test_order_chain_orders_leaf_to_root():
    leaf, inter, root = _chain()
    assert root.subject == root.issuer and leaf.issuer == inter.subject
    for order in itertools.permutations((leaf, inter, root)):
        assert order_chain(order, "pck_chain") == (leaf, inter, root)


@pytest.mark.parametrize("defect", ["missing_intermediate", "missing_root", "duplicate_leaf",
                                    "duplicate_intermediate", "extra_root_copy", "leaf_only",
                                    "two_leaves"])
def test_order_chain_refuses_extra_or_missing_links(defect):
    leaf, inter, root = _chain()
    other_tdx = next((c for c in CASES if _certs(_load(c)[1])[0] != leaf), None)
    sets = {
        "missing_intermediate": (leaf, root),
        "missing_root": (leaf, inter),
        "duplicate_leaf": (leaf, leaf, inter, root),
        "duplicate_intermediate": (leaf, inter, inter, root),
        "extra_root_copy": (leaf, inter, root, root),
        "leaf_only": (leaf,),
        "two_leaves": (leaf, inter, root,
                       *(order_chain(tuple(_certs(_load(other_tdx)[1])), "x")[:1]
                         if other_tdx else (leaf,))),
    }
    with pytest.raises(ChainInvalid):
        order_chain(sets[defect], "pck_chain")
    with pytest.raises(CollateralError):
        order_chain(sets[defect], "tcb_info_issuer_chain", CollateralError)


def test_reordered_chain_with_a_broken_signature_is_still_refused():
    """Ordering by name decides nothing about trust: a certificate whose name says "issued by
    the intermediate" but whose signature is not still fails the chain check."""
    exp, quote, at = _load(CASES[0])
    blocks = list(PEM.finditer(quote))
    # flip one base64 character inside the leaf's signature area (end of the first block)
    leaf = blocks[0]
    body = bytearray(quote)
    pos = leaf.end() - len(b"-----END CERTIFICATE-----") - 10
    body[pos] = ord("A") if body[pos] != ord("A") else ord("B")
    variant = _reorder_in_place(bytes(body), tuple(reversed(range(len(blocks)))))
    authentic = _outcome(_verifier(exp, DEV / CASES[0]), variant, at)[0]
    assert authentic is False
