"""Which hardware verifiers the KBS enables, decided once at start-up from its collateral.

A hardware quote or report proves little on its own: that it chains to Intel's or AMD's root.
Whether the quoting enclave is Intel's (QE Identity), whether the TDX module is Intel's (module
identity), whether a certificate was revoked (CRLs) and whether the platform's TCB is current
(TCB Info; for SNP the minimum-TCB rule) all need **current collateral**. A verifier built
without it skips those checks, and its claims carry no TCB status. So the KBS enables a
hardware TEE only when every check can run:

* ``sgx``/``tdx``: a collateral source — a directory holding every Intel item
  (:data:`DCAP_ITEMS`), and/or Intel PCS fetched by the KBS (``collateral_online`` or
  ``pcs_url``) behind an on-disk cache in the data directory. CRLs are required
  (``require_revocation``), TCB Info and QE Identity always were.
* ``snp``: an explicit minimum TCB (``snp_min_tcb``) *and* a source of the ARK's CRL — a
  directory with ``vcek_crl.der``/``vlek_crl.der``, or AMD KDS fetched by the KBS
  (``collateral_online`` or ``kds_url``), cached likewise.

A TEE that does not qualify is not enabled (``auth`` refuses it) and the start-up log says
which and why. The default attestation policy adds a second line of defence: hardware claims
are affirming only with ``tcb_status == "UpToDate"``, which only a collateral check sets.

Vendor roots are pinned (Intel SGX Root CA, AMD ARKs). ``insecure_dcap_root`` /
``insecure_amd_ark`` replace the pins with other roots (a test PKI, pre-production parts):
weakening, so named ``insecure`` and warned about.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from arca.wire.errors import ConfigError

if TYPE_CHECKING:
    from arca.kbs.config import KbsConfig
    from arca.verifier.base import Verifier
    from arca.verifier.collateral import CollateralSource

log = logging.getLogger("arca.kbs")

#: What a collateral directory must hold for the DCAP verifiers (one FMSPC's bundle).
DCAP_ITEMS = ("tcb_info.json", "tcb_info_issuer_chain.pem", "qe_identity.json",
              "qe_identity_issuer_chain.pem", "pck_crl.der", "root_ca_crl.der")
#: Under the data directory: the on-disk cache of fetched collateral.
CACHE_DIR = "collateral-cache"
#: Fetched collateral is reused this long before asking the service again (a stale copy is
#: still served, and still judged by its nextUpdate, while the service is unreachable).
CACHE_SECONDS = 3600.0


@dataclass(frozen=True)
class Decision:
    """Start-up decision for one hardware TEE."""

    tee: str
    enabled: bool
    detail: str


def _pem_certs(paths: Iterable[str], what: str) -> list[x509.Certificate]:
    out = []
    for p in paths:
        try:
            out += x509.load_pem_x509_certificates(pathlib.Path(p).read_bytes())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{what} {p}: {e}") from None
    return out


def dcap_roots(cfg: KbsConfig) -> list[bytes]:
    """Pinned root key fingerprints for SGX/TDX: Intel's, or (insecure) the configured ones."""
    from arca.verifier.dcap.pck import INTEL_SGX_ROOT_CA_SPKI_SHA256, spki_sha256

    if not cfg.insecure_dcap_root:
        return [INTEL_SGX_ROOT_CA_SPKI_SHA256]
    log.warning("--insecure-dcap-root: SGX/TDX quotes are trusted under %s instead of the "
                "Intel SGX Root CA", ", ".join(cfg.insecure_dcap_root))
    return [spki_sha256(c) for c in _pem_certs(cfg.insecure_dcap_root, "insecure-dcap-root")]


def amd_arks(cfg: KbsConfig) -> Mapping[str, str]:
    """Pinned ARKs (SPKI SHA-256 hex -> product): AMD's, or (insecure) the configured ones."""
    from arca.verifier.snp.certs import AMD_ARK_SPKI_SHA256
    from arca.verifier.snp.report import PRODUCTS

    if not cfg.insecure_amd_ark:
        return AMD_ARK_SPKI_SHA256
    log.warning("--insecure-amd-ark: SNP reports are trusted under %s instead of AMD's ARKs",
                ", ".join(cfg.insecure_amd_ark))
    pins = {}
    for cert in _pem_certs(cfg.insecure_amd_ark, "insecure-amd-ark"):
        cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        product = str(cns[0].value).removeprefix("ARK-") if cns else ""
        if product not in PRODUCTS:
            raise ConfigError(f"insecure-amd-ark: {cert.subject.rfc4514_string()} is not "
                              f"ARK-<{'|'.join(PRODUCTS)}>")
        spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        pins[hashlib.sha256(spki).hexdigest()] = product
    return pins


def _cached(inner: CollateralSource, cfg: KbsConfig, vendor: str) -> CollateralSource:
    from arca.verifier.collateral import CachingCollateral

    return CachingCollateral(inner, pathlib.Path(cfg.data_dir, CACHE_DIR, vendor),
                             max_age=CACHE_SECONDS)


def _chain(sources: list[CollateralSource]) -> CollateralSource | None:
    from arca.verifier.collateral import ChainedCollateral

    if not sources:
        return None
    return sources[0] if len(sources) == 1 else ChainedCollateral(*sources)


def _dcap(cfg: KbsConfig, tee: str, roots: list[bytes]) -> tuple[Verifier | None, str]:
    from arca.verifier.collateral import (
        INTEL_PCS_URL,
        INTEL_ROOT_CA_CRL_URL,
        DirectoryCollateral,
        IntelPcsCollateral,
    )
    from arca.verifier.dcap import SgxVerifier, TdxVerifier

    sources: list[CollateralSource] = []
    said = []
    if cfg.collateral:
        missing = [n for n in DCAP_ITEMS if not os.path.isfile(os.path.join(cfg.collateral, n))]
        if not missing:
            sources.append(DirectoryCollateral(cfg.collateral))
            said.append(f"directory {cfg.collateral}")
        elif not (cfg.collateral_online or cfg.pcs_url):
            return None, (f"collateral directory {cfg.collateral} lacks {', '.join(missing)} "
                          "and no Intel PCS is configured")
    if cfg.collateral_online or cfg.pcs_url:
        base = cfg.pcs_url or INTEL_PCS_URL
        # A PCS mirror (PCCS, a test server) serves the Root CA CRL next to the API.
        crl_url = INTEL_ROOT_CA_CRL_URL if cfg.pcs_url is None \
            else cfg.pcs_url.rstrip("/") + "/IntelSGXRootCA.der"
        sources.append(_cached(IntelPcsCollateral(base, root_ca_crl_url=crl_url), cfg,
                               "intel"))
        said.append(f"Intel PCS {base} (cached in {CACHE_DIR}/)")
    source = _chain(sources)
    if source is None:
        return None, ("no collateral source: revocation, QE identity, TDX module identity and "
                      "TCB level cannot be checked (give --collateral DIR with Intel's "
                      "collateral, or --collateral-online)")
    cls = SgxVerifier if tee == "sgx" else TdxVerifier
    verifier: Verifier = cls(source, trusted_root_spki_sha256=roots, require_revocation=True)
    return verifier, "collateral: " + " + ".join(said)


def _snp(cfg: KbsConfig, pins: Mapping[str, str]) -> tuple[Verifier | None, str]:
    from arca.verifier.collateral import DirectoryCollateral
    from arca.verifier.snp.kds import KDS_URL, KdsClient
    from arca.verifier.snp.tcbpolicy import CRL_NAMES, MinimumTcb
    from arca.verifier.snp.verifier import SnpVerifier

    try:
        min_tcb = MinimumTcb.parse(cfg.snp_min_tcb)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if min_tcb is None:
        return None, ("no minimum TCB (--snp-min-tcb PRODUCT:bootloader=N,tee=N,snp=N,"
                      "microcode=N): an SNP report's TCB cannot be judged")
    directory = DirectoryCollateral(cfg.collateral) if cfg.collateral else None
    online = cfg.collateral_online or cfg.kds_url
    has_crl = cfg.collateral is not None and any(
        os.path.isfile(os.path.join(cfg.collateral, n)) for n in CRL_NAMES.values())
    if not online and not has_crl:
        return None, ("no source of AMD's CRL (vcek_crl.der/vlek_crl.der in --collateral DIR, "
                      "or --collateral-online): revocation cannot be checked")
    kds: CollateralSource | None = None
    said = [f"minimum TCB {min_tcb.to_json()}"]
    if directory is not None:
        said.append(f"directory {cfg.collateral}")
    if online:
        base = cfg.kds_url or KDS_URL
        kds = _cached(KdsClient(base), cfg, "amd")
        said.append(f"AMD KDS {base} (cached in {CACHE_DIR}/)")
    verifier: Verifier = SnpVerifier(directory, pinned_arks=pins, kds=kds, min_tcb=min_tcb,
                                     require_revocation=True)
    return verifier, ", ".join(said)


def hardware_verifiers(cfg: KbsConfig) -> tuple[dict[str, Verifier], list[Decision]]:
    """The hardware verifiers this KBS enables, and why each TEE is or is not enabled."""
    out: dict[str, Verifier] = {}
    decisions = []
    roots = dcap_roots(cfg)
    pins = amd_arks(cfg)
    builders: list[tuple[str, Any]] = [("sgx", lambda: _dcap(cfg, "sgx", roots)),
                                       ("tdx", lambda: _dcap(cfg, "tdx", roots)),
                                       ("snp", lambda: _snp(cfg, pins))]
    for tee, build in builders:
        try:
            verifier, detail = build()
        except ImportError as e:
            verifier, detail = None, f"verifier unavailable: {e}"
        if verifier is not None:
            out[tee] = verifier
        decisions.append(Decision(tee, verifier is not None, detail))
    for d in decisions:
        if d.enabled:
            log.info("%s evidence accepted: %s", d.tee, d.detail)
        else:
            log.warning("%s evidence NOT accepted: %s", d.tee, d.detail)
    return out, decisions
