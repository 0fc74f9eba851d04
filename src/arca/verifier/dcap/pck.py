"""Certificate side of DCAP: the Intel SGX PCK certificate extension, certificate chains pinned
to the Intel SGX Root CA by public-key fingerprint, and CRLs.

What it does: parse the SGX extension (OID 1.2.840.113741.1.13.1: PPID, TCB components,
PCESVN, CPUSVN, PCE-ID, FMSPC, SGX type) per the *Intel SGX PCK Certificate and Certificate
Revocation List Profile Specification*; verify that each certificate of a chain is signed by the
next, that issuers are CAs, that the last is self-signed with a pinned public key; check
validity at an instant; verify CRLs against their issuer. Successful results are cached by the
SHA-256 of the exact DER bytes, so an unchanged chain or CRL is never verified twice.

What it does not: fetch anything, or decide TCB status.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from arca.errors import (
    ArcaError,
    ChainInvalid,
    CollateralError,
    Expired,
    MalformedEvidence,
    Revoked,
    SignatureInvalid,
    UntrustedRoot,
)
from arca.verifier.dcap import _der

#: SHA-256 of the DER SubjectPublicKeyInfo of the Intel SGX Root CA (both certificates of that
#: CA, valid until 2033 and until 2049, share this key). Computed from ../shared/vectors/roots/.
INTEL_SGX_ROOT_CA_SPKI_SHA256 = bytes.fromhex(
    "a0af031289f5d5d4132f9186068a7fc13628633ba235777472e29b6b6c67a49e"
)

SGX_EXTENSION_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_SGX = "1.2.840.113741.1.13.1"

#: Intel chains are leaf, intermediate, root; allow one spare level, refuse anything longer
#: (each extra certificate is an extra signature check an attacker can make us do).
MAX_CHAIN_LENGTH = 4
#: Verified chains/CRLs kept in memory. One entry per distinct platform CA + collateral set.
CACHE_ENTRIES = 512

#: What cryptography raises for certificates it cannot parse (some lazily, on access).
X509_ERRORS: tuple[type[Exception], ...] = (
    ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion, x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)

K = TypeVar("K")
V = TypeVar("V")


def digest(*parts: bytes) -> bytes:
    """SHA-256 over length-prefixed parts: a cache key no two different inputs share."""
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "big"))
        h.update(p)
    return h.digest()


class LruCache(Generic[K, V]):
    """Small thread-safe LRU map for verified, immutable results."""

    def __init__(self, size: int = CACHE_ENTRIES) -> None:
        self._size = size
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)


@dataclass(frozen=True)
class PckExtension:
    """Platform identity and TCB from the PCK certificate's SGX extension."""

    ppid: bytes
    tcb_components: tuple[int, ...]  # 16 SGX TCB component SVNs (OIDs ...2.1 - ...2.16)
    pce_svn: int                     # ...2.17
    cpu_svn: bytes                   # ...2.18, 16 bytes
    pce_id: bytes                    # ...3, 2 bytes
    fmspc: bytes                     # ...4, 6 bytes
    sgx_type: int                    # ...5: 0 Standard, 1 Scalable, 2 Scalable with integrity


def _pairs(seq_content: bytes, what: str) -> dict[str, tuple[int, bytes]]:
    out: dict[str, tuple[int, bytes]] = {}
    for tlv in _der.read_tlvs(seq_content):
        inner = _der.read_tlvs(_der.expect(tlv, _der.SEQUENCE, what))
        if len(inner) != 2:
            raise MalformedEvidence(f"pck_extension: {what} entry is not an (OID, value) pair",
                                    tee="dcap", field="pck_extension")
        oid = _der.decode_oid(_der.expect(inner[0], _der.OID, what))
        if oid in out:
            raise MalformedEvidence(f"pck_extension: duplicate {oid}", tee="dcap",
                                    field="pck_extension")
        out[oid] = inner[1]
    return out


def _need(pairs: dict[str, tuple[int, bytes]], oid: str, tag: int, name: str,
          size: int | None = None) -> bytes:
    if oid not in pairs:
        raise MalformedEvidence(f"pck_extension: {name} ({oid}) missing", tee="dcap",
                                field="pck_extension")
    value = _der.expect(pairs[oid], tag, name)
    if size is not None and len(value) != size:
        raise MalformedEvidence(f"pck_extension: {name} has {len(value)} bytes, expected {size}",
                                tee="dcap", field="pck_extension")
    return value


def parse_sgx_extension(cert: x509.Certificate) -> PckExtension:
    try:
        ext = cert.extensions.get_extension_for_oid(SGX_EXTENSION_OID).value
    except x509.ExtensionNotFound:
        raise MalformedEvidence("pck_extension: PCK certificate has no SGX extension",
                                tee="dcap", field="pck_extension") from None
    except X509_ERRORS as e:  # malformed extensions list
        raise MalformedEvidence(f"pck_extension: {e}", tee="dcap", field="pck_extension") from e
    return parse_sgx_extension_der(ext.value if isinstance(ext, x509.UnrecognizedExtension)
                                   else b"")


def parse_sgx_extension_der(raw: bytes) -> PckExtension:
    """Parse the DER value of the SGX extension (a SEQUENCE of (OID, value) pairs)."""
    top = _der.read_tlvs(raw)
    if len(top) != 1:
        raise MalformedEvidence("pck_extension: not a single SEQUENCE", tee="dcap",
                                field="pck_extension")
    pairs = _pairs(_der.expect(top[0], _der.SEQUENCE, "extension"), "extension")
    tcb = _pairs(_need(pairs, f"{_SGX}.2", _der.SEQUENCE, "TCB"), "TCB")
    comps = tuple(
        _der.decode_uint(_need(tcb, f"{_SGX}.2.{i}", _der.INTEGER, f"SGX TCB COMP{i:02d} SVN"),
                         f"COMP{i:02d}")
        for i in range(1, 17)
    )
    if any(c > 255 for c in comps):
        raise MalformedEvidence("pck_extension: TCB component SVN above 255", tee="dcap",
                                field="pck_extension")
    return PckExtension(
        ppid=_need(pairs, f"{_SGX}.1", _der.OCTET_STRING, "PPID", 16),
        tcb_components=comps,
        pce_svn=_der.decode_uint(_need(tcb, f"{_SGX}.2.17", _der.INTEGER, "PCESVN"), "PCESVN"),
        cpu_svn=_need(tcb, f"{_SGX}.2.18", _der.OCTET_STRING, "CPUSVN", 16),
        pce_id=_need(pairs, f"{_SGX}.3", _der.OCTET_STRING, "PCE-ID", 2),
        fmspc=_need(pairs, f"{_SGX}.4", _der.OCTET_STRING, "FMSPC", 6),
        sgx_type=_der.decode_uint(_need(pairs, f"{_SGX}.5", _der.ENUMERATED, "SGX Type"),
                                  "SGX Type"),
    )


def spki_sha256(cert: x509.Certificate) -> bytes:
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def _cn(cert: x509.Certificate) -> str:
    try:
        attrs = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    except X509_ERRORS:
        return "?"
    return str(attrs[0].value) if attrs else cert.subject.rfc4514_string()


@dataclass(frozen=True)
class VerifiedChain:
    """A chain whose signatures and root pin have been checked (dates are checked per call)."""

    certs: tuple[x509.Certificate, ...]
    ders: tuple[bytes, ...]
    names: tuple[str, ...]
    windows: tuple[tuple[dt.datetime, dt.datetime], ...]
    leaf_key: ec.EllipticCurvePublicKey

    def check_time(self, at: dt.datetime, item: str) -> None:
        for i, (nb, na) in enumerate(self.windows):
            if at < nb or at > na:
                state = f"not valid before {nb.isoformat()}" if at < nb else \
                    f"expired at {na.isoformat()}"
                raise Expired(f"{item}: certificate {i} ({self.names[i]}) {state}, evaluated at "
                              f"{at.isoformat()}", tee="dcap", field=item,
                              expected=f"{nb.isoformat()}..{na.isoformat()}",
                              actual=at.isoformat())

    @property
    def issuer_ca(self) -> x509.Certificate:
        return self.certs[1]

    @property
    def root(self) -> x509.Certificate:
        return self.certs[-1]


def load_pem_chain(pem: bytes, item: str, error: type[ArcaError] = MalformedEvidence
                   ) -> tuple[x509.Certificate, ...]:
    """Certificates of a PEM bundle in order; trailing NUL bytes (C-string padding) ignored."""
    try:
        with warnings.catch_warnings():
            # Deprecation warnings about odd encodings are not ours to print; errors still raise.
            warnings.simplefilter("ignore")
            certs = tuple(x509.load_pem_x509_certificates(pem.rstrip(b"\0")))
    except X509_ERRORS as e:
        raise error(f"{item}: not a PEM certificate chain ({e})", tee="dcap", field=item) from e
    if not 2 <= len(certs) <= MAX_CHAIN_LENGTH:
        raise error(f"{item}: {len(certs)} certificates, expected 2..{MAX_CHAIN_LENGTH}",
                    tee="dcap", field=item)
    return certs


class ChainVerifier:
    """Verifies chains to a pinned root; remembers chains that verified (keyed by DER digest)."""

    def __init__(self, trusted_spki_sha256: Iterable[bytes]) -> None:
        self.trusted = frozenset(trusted_spki_sha256)
        if not self.trusted:
            raise ValueError("at least one trusted root fingerprint is required")
        self._chains: LruCache[bytes, VerifiedChain] = LruCache()
        self._crls: LruCache[bytes, tuple[frozenset[int], dt.datetime, dt.datetime]] = \
            LruCache()

    def verify(self, certs: tuple[x509.Certificate, ...], item: str) -> VerifiedChain:
        ders = tuple(c.public_bytes(serialization.Encoding.DER) for c in certs)
        key = digest(*ders)
        cached = self._chains.get(key)
        if cached is not None:
            return cached
        names = tuple(_cn(c) for c in certs)
        for i in range(len(certs)):
            issuer = certs[min(i + 1, len(certs) - 1)]
            what = (f"certificate {i} ({names[i]}) is not signed by certificate {i + 1} "
                    f"({names[i + 1]})" if i + 1 < len(certs)
                    else f"root certificate ({names[i]}) is not self-signed")
            try:
                certs[i].verify_directly_issued_by(issuer)
            except X509_ERRORS + (InvalidSignature,) as e:
                raise ChainInvalid(f"{item}: {what}: {e or 'bad signature'}", tee="dcap",
                                   field=item) from None
            if i > 0:
                try:
                    bc = certs[i].extensions.get_extension_for_class(x509.BasicConstraints).value
                    is_ca = bc.ca
                except X509_ERRORS + (x509.ExtensionNotFound,):
                    is_ca = False
                if not is_ca:
                    raise ChainInvalid(f"{item}: certificate {i} ({names[i]}) issues "
                                       "certificates but is not a CA", tee="dcap", field=item)
        try:
            fp = spki_sha256(certs[-1])
            leaf_key = certs[0].public_key()
        except X509_ERRORS as e:  # unreachable after a verified signature; defensive
            raise ChainInvalid(f"{item}: unusable public key ({e})", tee="dcap",
                               field=item) from None
        if fp not in self.trusted:
            raise UntrustedRoot(f"{item}: root {names[-1]} has public key fingerprint "
                                f"{fp.hex()}, not a pinned root", tee="dcap", field=item,
                                actual=fp.hex())
        if not isinstance(leaf_key, ec.EllipticCurvePublicKey) or \
                not isinstance(leaf_key.curve, ec.SECP256R1):
            raise ChainInvalid(f"{item}: leaf key is not ECDSA P-256", tee="dcap", field=item)
        chain = VerifiedChain(
            certs, ders, names,
            tuple((c.not_valid_before_utc, c.not_valid_after_utc) for c in certs), leaf_key,
        )
        self._chains.put(key, chain)
        return chain

    def crl_revoked(self, crl_der: bytes, chain: VerifiedChain, index: int, at: dt.datetime,
                    item: str) -> frozenset[int]:
        """Serials revoked by ``crl_der``, after checking it is signed by certificate ``index``
        of the verified ``chain`` and current at ``at``."""
        issuer = chain.certs[index]
        key = digest(crl_der, chain.ders[index])
        cached = self._crls.get(key)
        if cached is None:
            try:
                crl = x509.load_der_x509_crl(crl_der)
                crl_issuer = crl.issuer
            except X509_ERRORS as e:
                raise CollateralError(f"{item}: not a DER CRL ({e})", field=item) from e
            if crl_issuer != issuer.subject:
                raise CollateralError(f"{item}: issued by {crl.issuer.rfc4514_string()}, "
                                      f"expected {issuer.subject.rfc4514_string()}", field=item)
            try:
                ok = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
            except X509_ERRORS:
                ok = False
            if not ok:
                raise SignatureInvalid(f"{item}: CRL signature does not verify with "
                                       f"{_cn(issuer)}", tee="dcap", field=item)
            if crl.next_update_utc is None:
                raise CollateralError(f"{item}: CRL has no nextUpdate", field=item)
            try:
                serials = frozenset(r.serial_number for r in crl)
            except X509_ERRORS as e:
                raise CollateralError(f"{item}: bad CRL entry ({e})", field=item) from e
            cached = (serials, crl.last_update_utc, crl.next_update_utc)
            self._crls.put(key, cached)
        serials, this_update, next_update = cached
        if at < this_update or at > next_update:
            raise Expired(f"{item}: CRL valid {this_update.isoformat()}..{next_update.isoformat()}"
                          f", evaluated at {at.isoformat()}", tee="dcap", field=item,
                          expected=f"{this_update.isoformat()}..{next_update.isoformat()}",
                          actual=at.isoformat())
        return serials


def check_not_revoked(cert: x509.Certificate, revoked: frozenset[int], item: str) -> None:
    if cert.serial_number in revoked:
        raise Revoked(f"{item}: certificate {_cn(cert)} (serial {cert.serial_number:x}) is "
                      "revoked", tee="dcap", field=item, actual=f"{cert.serial_number:x}")
