"""The shared DCAP verification path for SGX and TDX quotes.

Steps (numbers appear in the code; spec: Intel SGX/TDX DCAP quote verification, as restated in
``../shared/vectors/README.md`` "valid" and "tcb_status"):

1. Parse the quote (:mod:`.quote`); its TEE type must be this verifier's.
2. PCK chain (certification data type 5): each certificate signed by the next, root
   self-signed, root public key pinned (Intel SGX Root CA by default).
3. QE report signature: ECDSA P-256 by the PCK certificate key over the 384-byte QE report.
4. QE binding: QE REPORT_DATA = SHA-256(attestation key || QE auth data) || 32 zero bytes.
5. Quote signature: ECDSA P-256 by the attestation key over header (+ v5 body descriptor) + body.
   -- the quote is *authentic* from here on: errors raised later carry ``authentic=True``
   and the quote's ``claims`` in their fields, so a caller can tell "not genuine" from
   "genuine but not acceptable now".
6. Time: every PCK chain certificate current at ``at``.
7. Caller bindings: report data and init-data (exact length, zero padding, constant time).
8. Collateral (when a source is configured): Intel Root CA CRL and PCK CRL (optional, required
   with ``require_revocation`` as the KBS sets it; revoked certificate -> :class:`Revoked`),
   TCB Info and QE Identity (required) signed through the TCB signing chain to the pinned root
   and current; TCB Info id/FMSPC/PCE-ID match the quote and PCK certificate; QE Identity
   matches the QE report; TDX module identity matches MRSIGNERSEAM.
9. TCB level matching (:mod:`.tcb`); ``TcbNotSupported`` and ``Revoked`` reject the quote,
   any other status is reported as a claim for policy to judge.

Without a collateral source, steps 8-9 are skipped and ``tcb_status`` is ``None``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from arca.errors import (
    ArcaError,
    BindingMismatch,
    CollateralError,
    MalformedEvidence,
    Revoked,
    SignatureInvalid,
    TcbError,
)
from arca.verifier.base import Claims, Expected
from arca.verifier.collateral import CollateralSource
from arca.verifier.dcap import tcb as tcbmod
from arca.verifier.dcap.chainorder import order_chain
from arca.verifier.dcap.pck import (
    INTEL_SGX_ROOT_CA_SPKI_SHA256,
    ChainVerifier,
    LruCache,
    PckExtension,
    VerifiedChain,
    check_not_revoked,
    digest,
    load_pem_chain,
    parse_sgx_extension,
)
from arca.verifier.dcap.quote import Quote, SgxReportBody, parse_quote
from arca.verifier.dcap.signed_collateral import (
    QeIdentity,
    SignedCollateral,
    TcbInfo,
    verify_p256,
)


def check_binding(name: str, actual: bytes, expected: bytes | None, tee: str) -> None:
    """Compare a caller-expected value with the evidence field, at the field's exact length.

    Padding rule: an expected value shorter than the field (e.g. a 32-byte SHA-256 in a 48-byte
    MRCONFIGID) must be followed by zero bytes in the evidence; a longer one is a caller error.
    """
    if expected is None:
        return
    if len(expected) > len(actual):
        raise ValueError(f"expected {name} has {len(expected)} bytes, the field holds "
                         f"{len(actual)}")
    padded = bytes(expected) + bytes(len(actual) - len(expected))
    if not hmac.compare_digest(padded, actual):
        raise BindingMismatch(f"{name}: evidence holds {actual.hex()}, expected {padded.hex()}",
                              tee=tee, field=name, expected=padded.hex(), actual=actual.hex())


def _utc(at: dt.datetime | None) -> dt.datetime:
    if at is None:
        return dt.datetime.now(dt.UTC)
    if at.tzinfo is None:
        raise ValueError("'at' must be timezone-aware")
    return at.astimezone(dt.UTC)


class DcapVerifier:
    """Verifies Intel DCAP quotes of one TEE type (``tee = "sgx"`` or ``"tdx"``).

    ``trusted_root_spki_sha256`` pins the root CA by the SHA-256 of its SubjectPublicKeyInfo
    (default: Intel SGX Root CA); tests pin a throw-away root instead. Verified chains, CRLs and
    collateral documents are cached per instance: reuse one instance.
    """

    tee = "dcap"

    def __init__(self, collateral: CollateralSource | None = None, *,
                 trusted_root_spki_sha256: Iterable[bytes] = (INTEL_SGX_ROOT_CA_SPKI_SHA256,),
                 require_revocation: bool = False) -> None:
        self.collateral = collateral
        # A relying party that releases secrets (the KBS) needs both CRLs: a PCK or CA
        # certificate Intel revoked must never pass because its CRL was not at hand.
        self.require_revocation = require_revocation
        self.chains = ChainVerifier(trusted_root_spki_sha256)
        self.signed = SignedCollateral(self.chains)
        # Deterministic checks already passed, keyed by digest of everything they depend on.
        self._qe_ok: LruCache[bytes, bool] = LruCache()
        self._att_keys: LruCache[bytes, ec.EllipticCurvePublicKey] = LruCache()
        self._pck: LruCache[bytes, tuple[VerifiedChain, PckExtension]] = LruCache()

    # -- hooks for the SGX/TDX subclasses ------------------------------------------------------
    def _values(self, quote: Quote) -> dict[str, Any]:
        raise NotImplementedError

    def _init_data(self, quote: Quote) -> bytes:
        """The body field that carries the init-data hash (SGX CONFIGID, TDX MRCONFIGID)."""
        raise NotImplementedError

    def _bindings(self, quote: Quote, expected: Expected) -> None:
        check_binding("report_data", quote.body.report_data, expected.report_data, self.tee)
        check_binding("init_data", self._init_data(quote), expected.init_data_hash, self.tee)

    # -- public API -----------------------------------------------------------------------------
    def parse(self, evidence: bytes) -> Quote:
        quote = parse_quote(evidence)
        if quote.tee != self.tee:
            raise MalformedEvidence(f"header.tee_type: {quote.tee} quote given to the {self.tee} "
                                    "verifier", tee=self.tee, field="header.tee_type",
                                    expected=self.tee, actual=quote.tee)
        return quote

    def verify(self, evidence: bytes, *, expected: Expected = Expected(),
               at: dt.datetime | None = None) -> Claims:
        when = _utc(at)
        try:
            return self._verify(evidence, expected, when)
        except ArcaError as e:
            # Shared DCAP code cannot know which verifier called it; name the TEE here.
            if e.fields.get("tee") in (None, "dcap"):
                e.fields["tee"] = self.tee
            raise

    def _verify(self, evidence: bytes, expected: Expected, when: dt.datetime) -> Claims:
        quote = self.parse(evidence)                                              # 1
        sig = quote.signature
        chain, pck = self._pck_chain(sig.cert_data)                              # 2
        self._check_qe_report(quote, chain)                                       # 3, 4
        att_key = self._attestation_key(sig.attestation_key)
        if not verify_p256(att_key, sig.signature, quote.signed_region):          # 5
            raise SignatureInvalid("quote_signature: header and body signature does not verify "
                                   "with the attestation key", tee=self.tee,
                                   field="quote_signature")
        values = self._values(quote)
        values["fmspc"] = pck.fmspc.hex()
        values["pce_id"] = pck.pce_id.hex()
        values["format_version"] = quote.version
        try:
            chain.check_time(when, "pck_chain")                                   # 6
            self._bindings(quote, expected)                                       # 7
            result = self._collateral_and_tcb(quote, chain, pck, when)            # 8, 9
        except ArcaError as e:
            e.fields["authentic"] = True
            e.fields["claims"] = {"tee": self.tee, **values, "debug": quote.body.debug}
            raise
        return Claims(tee=self.tee, values=values, debug=quote.body.debug,
                      tcb_status=result.status if result else None,
                      advisory_ids=result.advisory_ids if result else (),
                      format_version=quote.version)

    # -- steps ----------------------------------------------------------------------------------
    def _pck_chain(self, cert_data: bytes) -> tuple[VerifiedChain, PckExtension]:
        # Keyed by the exact embedded bytes: an unchanged chain is neither re-parsed nor
        # re-verified (its dates are still checked on every call).
        key = hashlib.sha256(cert_data).digest()
        hit = self._pck.get(key)
        if hit is None:
            chain = self.chains.verify(order_chain(load_pem_chain(cert_data, "pck_chain"),
                                                   "pck_chain"), "pck_chain")
            hit = (chain, parse_sgx_extension(chain.certs[0]))
            self._pck.put(key, hit)
        return hit

    def _attestation_key(self, raw: bytes) -> ec.EllipticCurvePublicKey:
        key = self._att_keys.get(raw)
        if key is None:
            try:
                key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw)
            except ValueError:
                raise SignatureInvalid("attestation_key: not a point on P-256", tee=self.tee,
                                       field="attestation_key") from None
            self._att_keys.put(raw, key)
        return key

    def _check_qe_report(self, quote: Quote, chain: VerifiedChain) -> None:
        sig = quote.signature
        memo = digest(chain.certs[0].signature, sig.qe_report.raw, sig.qe_report_signature,
                      sig.attestation_key, sig.qe_auth_data)
        if self._qe_ok.get(memo):
            return
        if not verify_p256(chain.leaf_key, sig.qe_report_signature, sig.qe_report.raw):
            raise SignatureInvalid("qe_report_signature: QE report signature does not verify "
                                   "with the PCK certificate key", tee=self.tee,
                                   field="qe_report_signature")
        want = hashlib.sha256(sig.attestation_key + sig.qe_auth_data).digest() + bytes(32)
        got = sig.qe_report.body.report_data
        if not hmac.compare_digest(want, got):
            raise BindingMismatch("qe_report_data: QE REPORT_DATA is not SHA-256(attestation key"
                                  " || QE auth data) followed by zeros", tee=self.tee,
                                  field="qe_report_data", expected=want.hex(), actual=got.hex())
        self._qe_ok.put(memo, True)

    def _item(self, name: str, context: Mapping[str, str]) -> bytes | None:
        assert self.collateral is not None
        return self.collateral.get(name, context)

    def _required(self, name: str, context: Mapping[str, str]) -> bytes:
        data = self._item(name, context)
        if data is None:
            raise CollateralError(f"{name}: missing from the collateral source", field=name)
        return data

    def _collateral_and_tcb(self, quote: Quote, chain: VerifiedChain, pck: PckExtension,
                            at: dt.datetime) -> tcbmod.TcbResult | None:
        if self.collateral is None:
            return None
        ca_cn = chain.names[1].lower()
        ctx = {"tee": self.tee, "fmspc": pck.fmspc.hex(),
               "pck_ca": "processor" if "processor" in ca_cn else "platform"}
        root_revoked: frozenset[int] = frozenset()
        get = self._required if self.require_revocation else self._item
        root_crl = get("root_ca_crl.der", ctx)
        if root_crl is not None:
            root_revoked = self.chains.crl_revoked(root_crl, chain, -1, at, "root_ca_crl")
            for cert in chain.certs[1:-1]:
                check_not_revoked(cert, root_revoked, "pck_chain")
        pck_crl = get("pck_crl.der", ctx)
        if pck_crl is not None:
            revoked = self.chains.crl_revoked(pck_crl, chain, 1, at, "pck_crl")
            check_not_revoked(chain.certs[0], revoked, "pck_certificate")
        info, info_chain = self.signed.tcb_info(
            self._required("tcb_info.json", ctx),
            self._required("tcb_info_issuer_chain.pem", ctx), at)
        qe, qe_chain = self.signed.qe_identity(
            self._required("qe_identity.json", ctx),
            self._required("qe_identity_issuer_chain.pem", ctx), at)
        for c in (*info_chain.certs[:-1], *qe_chain.certs[:-1]):
            check_not_revoked(c, root_revoked, "tcb_signing_chain")
        if info.id != self.tee.upper():
            raise CollateralError(f"tcb_info: id {info.id} does not apply to a {self.tee} quote",
                                  field="tcb_info", expected=self.tee.upper(), actual=info.id)
        if info.fmspc != pck.fmspc or info.pce_id != pck.pce_id:
            raise CollateralError(
                f"tcb_info: FMSPC/PCE-ID {info.fmspc.hex()}/{info.pce_id.hex()} do not match the "
                f"PCK certificate's {pck.fmspc.hex()}/{pck.pce_id.hex()}", field="tcb_info",
                expected=pck.fmspc.hex(), actual=info.fmspc.hex())
        want_qe = "TD_QE" if self.tee == "tdx" else "QE"
        if qe.id != want_qe:
            raise CollateralError(f"qe_identity: id {qe.id} does not apply to a {self.tee} "
                                  f"quote (expected {want_qe})", field="qe_identity",
                                  expected=want_qe, actual=qe.id)
        _match_qe(quote.signature.qe_report.body, qe, self.tee)
        result = self._evaluate_with(quote, pck, info, qe)                        # 9
        if result.status == tcbmod.NOT_SUPPORTED:
            raise TcbError(f"tcb_status: TcbNotSupported: {result.detail}", tee=self.tee,
                           field="tcb_status", tcb_status=result.status)
        if result.status == "Revoked":
            raise Revoked("tcb_status: the platform TCB level is Revoked", tee=self.tee,
                          field="tcb_status", tcb_status=result.status,
                          advisory_ids=list(result.advisory_ids))
        return result

    def _evaluate_with(self, quote: Quote, pck: PckExtension, info: TcbInfo,
                       qe: QeIdentity) -> tcbmod.TcbResult:
        raise NotImplementedError


def _match_qe(report: SgxReportBody, qe: QeIdentity, tee: str) -> None:
    """QE Identity applies to the QE report: MRSIGNER, ISVPRODID, masked MISCSELECT/ATTRIBUTES."""
    problems = []
    if report.mr_signer != qe.mrsigner:
        problems.append(f"MRSIGNER {report.mr_signer.hex()} != {qe.mrsigner.hex()}")
    if report.isv_prod_id != qe.isv_prod_id:
        problems.append(f"ISVPRODID {report.isv_prod_id} != {qe.isv_prod_id}")
    if report.misc_select & qe.miscselect_mask != qe.miscselect & qe.miscselect_mask:
        problems.append("MISCSELECT differs under its mask")
    masked = bytes(a & m for a, m in zip(report.attributes, qe.attributes_mask, strict=True))
    want = bytes(a & m for a, m in zip(qe.attributes, qe.attributes_mask, strict=True))
    if masked != want:
        problems.append("ATTRIBUTES differ under their mask")
    if problems:
        raise TcbError("qe_identity: QE report does not match the QE Identity: " +
                       "; ".join(problems), tee=tee, field="qe_identity")
