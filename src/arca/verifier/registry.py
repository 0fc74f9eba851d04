"""The verifier registry: a plain mapping TEE name → factory, and TEE detection for ``auto``.

What it does: constructs verifiers from :class:`~arca.verifier.base.VerifierOptions` (a
backend that cannot be built fails here, at start-up, with a :class:`ConfigError`, never at
request time), detects the TEE of raw evidence by its structure, and offers one call that
detects, builds and verifies (what ``arca verify`` uses).

What it does not do: read files or decide validity; every check lives in the TEE's module.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from collections.abc import Callable, Iterable

from arca.errors import CollateralError, ConfigError, MalformedEvidence
from arca.verifier.base import Claims, Expected, Verifier, VerifierOptions
from arca.verifier.collateral import CollateralSource

VerifierFactory = Callable[[VerifierOptions], Verifier]

#: Size of an SEV-SNP ATTESTATION_REPORT (ABI spec Table 23).
SNP_REPORT_SIZE = 0x4A0
#: DCAP quote header: version (u16), attestation key type (u16, 2 = ECDSA P-256), TEE type
#: (u32: 0x00 SGX, 0x81 TDX) — Intel DCAP Quote Library API, "Quote Header".
DCAP_VERSIONS = (3, 4, 5)
DCAP_ATT_KEY_ECDSA_P256 = 2
DCAP_TEE_TYPES = {0x00: "sgx", 0x81: "tdx"}
DCAP_HEADER_SIZE = 48
#: Keys of ``sim`` evidence (see :mod:`arca.wire.simreport`).
SIM_KEYS = frozenset({"report", "signature", "cert_chain"})


def _collateral(options: VerifierOptions,
                online: CollateralSource | None = None) -> CollateralSource | None:
    """The offline bundle (if any), then the online source behind the on-disk cache (if any)."""
    from arca.verifier.collateral import CachingCollateral, ChainedCollateral, DirectoryCollateral

    sources: list[CollateralSource] = []
    if options.collateral_dir is not None:
        sources.append(DirectoryCollateral(options.collateral_dir))
    if online is not None:
        cached = CachingCollateral(online, options.cache_dir) if options.cache_dir else online
        sources.append(cached)
    if not sources:
        return None
    return sources[0] if len(sources) == 1 else ChainedCollateral(*sources)


def _dcap(tee: str) -> VerifierFactory:
    def build(options: VerifierOptions) -> Verifier:
        from arca.verifier.collateral import INTEL_PCS_URL, IntelPcsCollateral
        from arca.verifier.dcap import SgxVerifier, TdxVerifier

        online = IntelPcsCollateral(options.extra.get("pcs_url", INTEL_PCS_URL)) \
            if options.online else None
        cls = SgxVerifier if tee == "sgx" else TdxVerifier
        return cls(_collateral(options, online))

    return build


def _snp(options: VerifierOptions) -> Verifier:
    from arca.verifier.snp.certs import AMD_ARK_SPKI_SHA256
    from arca.verifier.snp.kds import KDS_URL, KdsClient
    from arca.verifier.snp.verifier import SnpVerifier

    kds: CollateralSource | None = None
    if options.online:
        kds = KdsClient(options.extra.get("kds_url", KDS_URL))
        if options.cache_dir:
            from arca.verifier.collateral import CachingCollateral

            kds = CachingCollateral(kds, options.cache_dir)
    pins = options.extra.get("snp_pinned_arks", AMD_ARK_SPKI_SHA256)
    return SnpVerifier(_collateral(options), pinned_arks=pins, kds=kds)


def _sim(options: VerifierOptions) -> Verifier:
    from arca.verifier.sim import from_options

    return from_options(options)


#: The registry. Adding a TEE is one line here and one module.
FACTORIES: dict[str, VerifierFactory] = {
    "sgx": _dcap("sgx"),
    "tdx": _dcap("tdx"),
    "snp": _snp,
    "sim": _sim,
}


def get_verifier(tee: str, options: VerifierOptions | None = None) -> Verifier:
    """Build the verifier of ``tee``; any failure to construct it is a :class:`ConfigError`."""
    factory = FACTORIES.get(tee)
    if factory is None:
        raise ConfigError(f"unknown TEE {tee!r}; known: {', '.join(sorted(FACTORIES))}")
    try:
        return factory(options or VerifierOptions())
    except ConfigError:
        raise
    except (ImportError, ValueError, TypeError, OSError, CollateralError) as e:
        raise ConfigError(f"cannot construct the {tee} verifier: {e}", tee=tee) from None


def build_verifiers(tees: Iterable[str], options: VerifierOptions | None = None,
                    ) -> dict[str, Verifier]:
    """Construct every requested verifier now (start-up), failing on the first that cannot."""
    return {tee: get_verifier(tee, options) for tee in tees}


def detect_tee(evidence: bytes) -> str:
    """The TEE whose evidence format ``evidence`` has: ``snp``, ``sgx``, ``tdx`` or ``sim``."""
    if len(evidence) >= SNP_REPORT_SIZE:
        # A report, possibly followed by its certificate table. A DCAP header's first u32 is
        # version | key type << 16 (>= 0x20003) and JSON starts with "{": never 2..5.
        version, sig_algo = struct.unpack_from("<I", evidence, 0)[0], struct.unpack_from(
            "<I", evidence, 0x34)[0]
        if 2 <= version <= 5 and sig_algo == 1:
            return "snp"
    if len(evidence) >= DCAP_HEADER_SIZE:
        version, key_type, tee_type = struct.unpack_from("<HHI", evidence, 0)
        if version in DCAP_VERSIONS and key_type == DCAP_ATT_KEY_ECDSA_P256 \
                and tee_type in DCAP_TEE_TYPES:
            return DCAP_TEE_TYPES[tee_type]
    if evidence[:1] == b"{":
        try:
            obj = json.loads(evidence)
        except (ValueError, UnicodeDecodeError):
            obj = None
        if isinstance(obj, dict) and set(obj) == SIM_KEYS:
            return "sim"
    raise MalformedEvidence(
        f"cannot tell the TEE of {len(evidence)} bytes of evidence: not an SNP report, a DCAP "
        "quote (version 3-5, ECDSA-P256, SGX/TDX) or sim evidence", field="tee")


def verify_evidence(
    evidence: bytes,
    *,
    tee: str = "auto",
    options: VerifierOptions | None = None,
    expected: Expected = Expected(),  # noqa: B008 - frozen, immutable default
    at: dt.datetime | None = None,
) -> Claims:
    """Detect (when ``tee`` is ``auto``), build the verifier, verify; raises on failure."""
    if tee == "auto":
        tee = detect_tee(evidence)
    return get_verifier(tee, options).verify(evidence, expected=expected, at=at)
