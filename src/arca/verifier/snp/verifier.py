"""The AMD SEV-SNP verifier: a 1184-byte ATTESTATION_REPORT + AMD certificates → claims.

Evidence is the report alone, or the report followed by the certificate table of an extended
report (:mod:`.certtable`). What it does, in order (each step raises an ``EvidenceError``
subclass naming its check):

1. parse the report (:mod:`.report`); SIGNING_KEY must name a VCEK or VLEK;
2. get the leaf (``vcek.pem``/``vlek.pem``), its CA (``ask.pem``/``asvk.pem``, a VLEK's CA
   filed as ``ask.pem`` too) and ``ark.pem``
   from the evidence's certificate table, else the collateral source (context keys: ``tee``
   = ``snp``, ``signing_key``, ``chip_id`` hex, ``product`` from CPUID or empty), else from
   AMD KDS when one is configured;
3. verify the chain ARK (self-signed, pinned by SPKI SHA-256) → ASK/ASVK → leaf, cached by
   the digest of the chain's bytes (:mod:`.certs`); the leaf type must match SIGNING_KEY;
4. check every certificate is valid at the evaluation instant;
5. verify the ECDSA P-384/SHA-384 signature over bytes 0x000-0x29F (ABI spec Chapter 10);
6. for report version 3+, CPUID family/model must name the ARK's product; the leaf's
   ``productName`` must too;
7. VCEK ``hwID`` equals CHIP_ID unless MASK_CHIP_ID zeroed it (pub. 57230 Table 8);
8. the leaf's ``blSPL``/``teeSPL``/``snpSPL``/``ucodeSPL`` (Turin: ``fmcSPL``) equal
   REPORTED_TCB, decoded with the product's TCB_VERSION layout;
9. REPORT_DATA and HOST_DATA equal the expected values when given;
10. revocation: the ARK's CRL (``vcek_crl.der``/``vlek_crl.der`` from the collateral source,
    else KDS) is authentic, current and does not list the ASK/ASVK; required with
    ``require_revocation`` (as the KBS sets it), else checked when the collateral source
    holds it (:mod:`.tcbpolicy`);
11. with a :class:`~.tcbpolicy.MinimumTcb`, ``tcb_status`` is ``UpToDate`` when REPORTED_TCB
    meets the product's minimum, ``OutOfDate`` when not; a product without a minimum is
    rejected (``TcbNotSupported``).

What it does not do: appraise. A debug policy, VMPL, or an old TCB is reported as claims; the
broker's policy decides. SNP has no TCB status service: without a minimum TCB,
``tcb_status`` is ``None`` (``arca verify``); the KBS always configures one.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from arca.errors import (
    BindingMismatch,
    ChainInvalid,
    CollateralError,
    MalformedEvidence,
    SignatureInvalid,
    TcbError,
)
from arca.verifier.base import Claims, Expected
from arca.verifier.collateral import CollateralSource
from arca.verifier.snp.certs import (
    AMD_ARK_SPKI_SHA256,
    ChainVerifier,
    VerifiedChain,
    leaf_extensions,
    load_amd_cert,
)
from arca.verifier.snp.certtable import split_evidence
from arca.verifier.snp.report import (
    PRODUCTS,
    SIG_ALGO_ECDSA_P384_SHA384,
    SnpReport,
    platform_info_claims,
)
from arca.verifier.snp.tcbpolicy import CRL_NAMES, MinimumTcb, check_crl


class SnpVerifier:
    """Verifier for ``tee = "snp"``. ``pinned_arks`` maps ARK SPKI SHA-256 (hex) → product;
    ``kds`` is an online source asked with per-product context (a :class:`KdsClient`,
    possibly behind ``CachingCollateral``), used only for what neither the evidence nor
    ``collateral`` holds."""

    tee = "snp"

    def __init__(
        self,
        collateral: CollateralSource | None = None,
        *,
        pinned_arks: Mapping[str, str] = AMD_ARK_SPKI_SHA256,
        kds: CollateralSource | None = None,
        min_tcb: MinimumTcb | None = None,
        require_revocation: bool = False,
    ) -> None:
        unknown = set(pinned_arks.values()) - set(PRODUCTS)
        if unknown:
            raise ValueError(f"pinned ARK products must be among {PRODUCTS}, got {unknown}")
        self._collateral = collateral
        self._kds = kds
        self._chains = ChainVerifier(pinned_arks)
        self._min_tcb = min_tcb
        self._require_revocation = require_revocation

    # -- step 2 -----------------------------------------------------------------------------

    def _certificates(self, report: SnpReport, kind: str,
                      carried: dict[str, bytes]) -> tuple[bytes, bytes, bytes]:
        leaf_name, ca_name = ("vcek.pem", "ask.pem") if kind == "VCEK" else ("vlek.pem",
                                                                              "asvk.pem")
        # Certificates carried in the evidence come first (they match the report's TCB); the
        # GHCB table has one CA slot (ASK GUID), which holds the ASVK for a VLEK.
        leaf = carried.get(leaf_name)
        ca = carried.get(ca_name) or carried.get("ask.pem")
        ark = carried.get("ark.pem")
        src = self._collateral
        if src is not None:
            # Context for sources that look certificates up (see arca.verifier.collateral).
            ctx = {"tee": "snp", "signing_key": kind, "chip_id": report.chip_id.hex(),
                   "product": report.cpuid_product or ""}
            leaf = leaf if leaf is not None else src.get(leaf_name, ctx)
            ca = ca if ca is not None else src.get(ca_name, ctx)
            if ca is None and kind == "VLEK":
                # KDS's /vlek/.../cert_chain and the GHCB table call the ASVK the ASK; an
                # operator's file may too. Its CN must still be SEV-VLEK-<product> (step 3).
                ca = src.get("ask.pem", ctx)
            ark = ark if ark is not None else src.get("ark.pem", ctx)
        if (leaf is None or ca is None or ark is None) and self._kds is not None:
            leaf, ca, ark = self._from_kds(report, kind, leaf, ca, ark)
        missing = [n for n, v in ((leaf_name, leaf), (ca_name, ca), ("ark.pem", ark))
                   if v is None]
        if missing or leaf is None or ca is None or ark is None:
            raise CollateralError(f"SNP collateral missing: {', '.join(missing)}", tee="snp",
                                  missing=missing)
        return leaf, ca, ark

    def _from_kds(self, report: SnpReport, kind: str, leaf: bytes | None, ca: bytes | None,
                  ark: bytes | None) -> tuple[bytes | None, bytes | None, bytes | None]:
        assert self._kds is not None
        # Version 2 reports do not name their product: a leaf at hand names it, else try the
        # products that emit version 2.
        products = [report.cpuid_product] if report.cpuid_product else ["Milan", "Genoa"]
        if leaf is not None and report.cpuid_product is None:
            name = leaf_extensions(load_amd_cert(leaf, kind.lower())).product_name or ""
            if name.split("-")[0] in PRODUCTS:
                products = [name.split("-")[0]]
        leaf_name, ca_name = ("vcek.pem", "ask.pem") if kind == "VCEK" else ("vlek.pem",
                                                                              "asvk.pem")
        for product in products:
            tcb = report.reported_tcb.components(product)
            ctx = {"tee": "snp", "product": product, "signing_key": kind,
                   "chip_id": report.chip_id.hex(), **{c: str(v) for c, v in tcb.items()}}
            got_leaf = leaf if leaf is not None else self._kds.get(leaf_name, ctx)
            if got_leaf is None:
                continue
            got_ca = ca if ca is not None else self._kds.get(ca_name, ctx)
            got_ark = ark if ark is not None else self._kds.get("ark.pem", ctx)
            return got_leaf, got_ca, got_ark
        return leaf, ca, ark

    # -- the verification -------------------------------------------------------------------

    def verify(
        self,
        evidence: bytes,
        *,
        expected: Expected = Expected(),  # noqa: B008 - frozen, immutable default
        at: dt.datetime | None = None,
    ) -> Claims:
        if at is None:
            at = dt.datetime.now(dt.UTC)
        elif at.tzinfo is None:
            raise ValueError("`at` must be timezone-aware")
        # Caller errors first: an expected value longer than its field can never be bound.
        for name, want, size in (("report_data", expected.report_data, 64),
                                 ("init_data", expected.init_data_hash, 32)):
            if want is not None and len(want) > size:
                raise ValueError(f"expected {name} is {len(want)} bytes; the SNP field "
                                 f"holds {size}")
        # 1. Parse (plain report, or report + the host's certificate table).
        report_bytes, carried = split_evidence(evidence)
        report = SnpReport.from_bytes(report_bytes)
        kind = report.signing_key
        if kind not in ("VCEK", "VLEK"):
            raise MalformedEvidence(f"SNP report SIGNING_KEY is {kind}, not VCEK or VLEK",
                                    tee="snp", field="signing_key", actual=kind)
        # 2-3. Certificates and chain (cached by the chain's digest).
        chain = self._chains.verify(kind, *self._certificates(report, kind, carried))
        product = chain.product
        # 4. Validity at the evaluation instant.
        chain.check_validity(at)
        # 5. Report signature (ABI spec Chapter 10: R, S little-endian, SHA-384 over 0-0x29F).
        if report.signature_algo != SIG_ALGO_ECDSA_P384_SHA384:
            raise SignatureInvalid(
                f"SNP report SIGNATURE_ALGO {report.signature_algo} is not ECDSA P-384/SHA-384",
                tee="snp", field="signature_algo")
        try:
            chain.leaf_key.verify(
                encode_dss_signature(report.signature_r, report.signature_s),
                report.signed_bytes, ec.ECDSA(hashes.SHA384()),
            )
        except InvalidSignature:
            raise SignatureInvalid(
                f"SNP report signature does not verify with the {kind}", tee="snp",
                field="signature") from None
        # 6. Product: CPUID (v3+) and the leaf's productName name the ARK's product.
        cpuid_product = report.cpuid_product
        if report.version >= 3 and cpuid_product != product:
            raise ChainInvalid(
                f"product: report CPUID family {report.cpuid_fam_id:#x} model "
                f"{report.cpuid_mod_id:#x} names {cpuid_product}, chain is ARK-{product}",
                tee="snp", field="product", expected=product, actual=cpuid_product)
        ext = leaf_extensions(chain.leaf)
        if ext.product_name is not None and ext.product_name.split("-")[0] != product:
            raise ChainInvalid(
                f"product: {kind} productName {ext.product_name!r} is not a {product}",
                tee="snp", field="product", expected=product, actual=ext.product_name)
        # The four TCB_VERSIONs in the product's layout: its reserved bytes are zero.
        for name, tcb in (("current_tcb", report.current_tcb),
                          ("reported_tcb", report.reported_tcb),
                          ("committed_tcb", report.committed_tcb),
                          ("launch_tcb", report.launch_tcb)):
            if any(tcb.reserved(product)):
                raise MalformedEvidence(
                    f"SNP report {name.upper()} {tcb.raw.hex()} sets bytes the {product} "
                    "TCB_VERSION layout reserves", tee="snp", field=name, actual=tcb.raw.hex())
        # 7. hwID binds a VCEK to one chip.
        if kind == "VCEK" and not report.chip_id_masked:
            hwid = ext.hwid
            if hwid is None or hwid + bytes(64 - len(hwid)) != report.chip_id:
                raise ChainInvalid(
                    "hwid: VCEK hwID does not match the report's CHIP_ID", tee="snp",
                    field="hwid", expected=report.chip_id.hex(),
                    actual=hwid.hex() if hwid else None)
        # 8. The leaf certifies exactly the REPORTED_TCB.
        reported = report.reported_tcb.components(product)
        for comp, value in reported.items():
            cert_value = ext.spl.get(comp)
            if cert_value != value:
                raise TcbError(
                    f"{kind} {comp} SPL is {cert_value}, REPORTED_TCB {comp} is {value}",
                    tee="snp", field=f"reported_tcb.{comp}", expected=value,
                    actual=cert_value)
        # 9. Bindings.
        _check_binding("report_data", report.report_data, expected.report_data)
        _check_binding("init_data", report.host_data, expected.init_data_hash)
        # 10. Revocation: the ARK's CRL does not list the ASK/ASVK (required when configured).
        crl = self._crl(chain)
        if crl is not None:
            check_crl(crl, chain, at)
        # 11. Minimum TCB, when configured: the tcb_status claim (SNP has no TCB Info).
        status = None
        if self._min_tcb is not None:
            status = self._min_tcb.status(product, reported)
        return Claims(
            tee="snp",
            values=_claims(report, product, kind),
            debug=report.policy.debug_allowed,
            tcb_status=status,
            format_version=report.version,
        )

    def _crl(self, chain: VerifiedChain) -> bytes | None:
        name = CRL_NAMES[chain.leaf_kind]
        # One CRL per product and key kind: no chip in the context, so a cache in front of
        # KDS keeps one copy rather than one per chip.
        ctx = {"tee": "snp", "signing_key": chain.leaf_kind, "product": chain.product}
        crl = self._collateral.get(name, ctx) if self._collateral is not None else None
        if crl is None and self._kds is not None and self._require_revocation:
            crl = self._kds.get(name, ctx)  # only asked when required: KDS rate-limits
        if crl is None and self._require_revocation:
            raise CollateralError(f"SNP collateral missing: {name} (the {chain.product} ARK's "
                                  "CRL)", tee="snp", missing=[name])
        return crl


def _check_binding(name: str, actual: bytes, expected: bytes | None) -> None:
    """Exact comparison. An expected value shorter than the field is zero-padded (the rule
    Trustee's KBS uses: a 48-byte SHA-384 in the 64-byte REPORT_DATA); a longer one is a
    caller error, never truncated."""
    if expected is None:
        return
    if len(expected) > len(actual):
        raise ValueError(f"expected {name} is {len(expected)} bytes; the SNP field holds "
                         f"{len(actual)}")
    padded = expected + bytes(len(actual) - len(expected))
    if not hmac.compare_digest(padded, actual):
        raise BindingMismatch(f"{name} does not match the expected value", tee="snp",
                              field=name, expected=padded.hex(), actual=actual.hex())


def _claims(r: SnpReport, product: str, kind: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        "measurement": r.measurement.hex(),
        "host_data": r.host_data.hex(),
        "init_data": r.host_data.hex(),
        "report_data": r.report_data.hex(),
        "policy": f"0x{r.policy.value:016x}",
        "policy_flags": r.policy.to_claims(),
        "vmpl": r.vmpl,
        "guest_svn": r.guest_svn,
        "chip_id": r.chip_id.hex(),
        "reported_tcb": r.reported_tcb.components(product),
        "current_tcb": r.current_tcb.components(product),
        "committed_tcb": r.committed_tcb.components(product),
        "launch_tcb": r.launch_tcb.components(product),
        "platform_info": platform_info_claims(r.platform_info),
        "family_id": r.family_id.hex(),
        "image_id": r.image_id.hex(),
        "id_key_digest": r.id_key_digest.hex(),
        "author_key_digest": r.author_key_digest.hex(),
        "author_key_en": r.author_key_en,
        "report_id": r.report_id.hex(),
        "report_id_ma": r.report_id_ma.hex(),
        "firmware_version": "{2}.{1}.{0}".format(*r.current_version),
        "product": product,
        "signing_key": kind,
        "format_version": r.version,
    }
    if r.version >= 3:
        values["cpuid"] = {"family": r.cpuid_fam_id, "model": r.cpuid_mod_id,
                           "stepping": r.cpuid_step}
    if r.version >= 5:
        values["launch_mit_vector"] = r.launch_mit_vector
        values["current_mit_vector"] = r.current_mit_vector
    return values
