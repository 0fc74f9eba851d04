"""AMD SEV-SNP certificates: loading, VCEK/VLEK extensions, the ARK→ASK→leaf chain, pinning.

What it does: loads AMD certificates (PEM or DER) including VCEKs with serial number 0, reads
the AMD extensions of a VCEK/VLEK (VCEK Certificate and KDS Interface Specification, pub.
57230, Table 8: ``1.3.6.1.4.1.3704.1.*``), verifies the chain ARK (self-signed, RSA-PSS) →
ASK/ASVK (RSA-PSS) → VCEK/VLEK (RSA-PSS) and pins the ARK by the SHA-256 of its
SubjectPublicKeyInfo. A verified chain is cached by the digest of its bytes, so an unchanged
chain is never verified twice; validity periods are kept and checked at every call's instant.

What it does not do: verify the report signature or compare the TCB with the report; that is
:mod:`arca.verifier.snp.verifier`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from arca.errors import ChainInvalid, Expired, MalformedEvidence, UntrustedRoot

#: SHA-256 of the DER SubjectPublicKeyInfo of AMD's ARKs, mapped to their product. Computed
#: from the ARK certificates of ``shared/vectors/roots`` (ARK-Milan valid 2020-10-22..2045,
#: ARK-Genoa 2022-01-26..2047, ARK-Turin 2023-05-15..2048), which AMD KDS serves at
#: ``/vcek/v1/<product>/cert_chain``.
AMD_ARK_SPKI_SHA256: Mapping[str, str] = {
    "9f056bee44377e29308cb5ffa895bdfb62d18881fa6bed8d6f075b0204089cb9": "Milan",
    "429a69c9422aa258ee4d8db5fcda9c6470ef15f8cd5a9cebd6cbc7d90b863831": "Genoa",
    "4f125410563a2ab9a50356f9243f6fe0b6f73de98603f53f90339c70e9d7ad08": "Turin",
}

#: AMD signs ARK, ASK/ASVK and VCEK/VLEK certificates with RSASSA-PSS, SHA-384, MGF1-SHA-384,
#: salt length 48 (pub. 57230, Chapter 2).
AMD_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)

#: A certificate larger than this is refused before parsing (AMD's are ~1.3-2 KiB).
MAX_CERT_BYTES = 16 * 1024
#: Verified chains kept in memory; a verifier sees few distinct chips, the bound stops a flood
#: of distinct chains from growing memory without limit.
CHAIN_CACHE_SIZE = 1024

_AMD_OID = "1.3.6.1.4.1.3704.1"
OID_PRODUCT_NAME = f"{_AMD_OID}.2"
OID_BL_SPL = f"{_AMD_OID}.3.1"
OID_TEE_SPL = f"{_AMD_OID}.3.2"
OID_SNP_SPL = f"{_AMD_OID}.3.3"
OID_UCODE_SPL = f"{_AMD_OID}.3.8"
OID_FMC_SPL = f"{_AMD_OID}.3.9"
OID_HWID = f"{_AMD_OID}.4"
#: Extension OID → component name of REPORTED_TCB.
SPL_OIDS = {
    OID_BL_SPL: "bootloader",
    OID_TEE_SPL: "tee",
    OID_SNP_SPL: "snp",
    OID_UCODE_SPL: "microcode",
    OID_FMC_SPL: "fmc",
}


# --- minimal DER reading (only what AMD certificates and their extensions need) -------------


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the DER element at ``pos``; bounds-checked."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise ValueError("DER length beyond data")
    return tag, pos, pos + length


def _split_certificate(der: bytes) -> tuple[bytes, bytes]:
    """(tbsCertificate bytes, signature bytes) of a DER certificate, read independently of the
    X.509 library so the exact signed bytes are used even for a certificate it had to patch."""
    tag, start, end = _tlv(der, 0)
    if tag != 0x30 or end != len(der):
        raise ValueError("certificate is not one DER SEQUENCE")
    t_tag, t_start, t_end = _tlv(der, start)
    if t_tag != 0x30:
        raise ValueError("tbsCertificate is not a SEQUENCE")
    tbs = der[start:t_end]
    a_tag, _, a_end = _tlv(der, t_end)
    s_tag, s_start, s_end = _tlv(der, a_end)
    if a_tag != 0x30 or s_tag != 0x03 or s_end != end or s_start >= s_end or der[s_start] != 0:
        raise ValueError("bad signature fields")
    # RFC 5280 §4.1.1.2: the outer signatureAlgorithm, which the signature does not cover,
    # must equal the signed tbsCertificate.signature field.
    pos = t_start
    if der[pos] == 0xA0:  # [0] EXPLICIT version
        pos = _tlv(der, pos)[2]
    pos = _tlv(der, pos)[2]  # serialNumber
    inner_end = _tlv(der, pos)[2]
    if der[pos:inner_end] != der[t_end:a_end]:
        raise ValueError("signatureAlgorithm differs from tbsCertificate.signature")
    return tbs, der[s_start + 1 : s_end]


def _serial_zero_patched(der: bytes) -> bytes | None:
    """``der`` with a zero serial number replaced by 1, or ``None`` if its serial is not zero.

    AMD KDS issues VCEKs/VLEKs with serial 0, which RFC 5280 disallows; ``cryptography``
    warns about it today and announces it will refuse such certificates. The patched copy is
    used only to read fields; signatures are always checked over the original bytes.
    """
    _, start, _ = _tlv(der, 0)
    _, pos, _ = _tlv(der, start)  # inside tbsCertificate
    if der[pos] == 0xA0:  # [0] EXPLICIT version
        _, _, pos = _tlv(der, pos)
    if der[pos : pos + 3] != b"\x02\x01\x00":
        return None
    return der[: pos + 2] + b"\x01" + der[pos + 3 :]


def _pem_to_der(data: bytes) -> bytes:
    """The DER of the single CERTIFICATE block of ``data`` (decoded here, not by the X.509
    library, so a serial-0 certificate is never handed to it unpatched)."""
    text = data.decode("ascii")
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    if text.count(begin) != 1 or text.count(end) != 1:
        raise ValueError("expected exactly one PEM CERTIFICATE block")
    body = text.split(begin, 1)[1].split(end, 1)[0]
    return base64.b64decode("".join(body.split()), validate=True)


def der_integer(value: bytes) -> int:
    tag, start, end = _tlv(value, 0)
    if tag != 0x02 or end != len(value) or start == end:
        raise ValueError("not a DER INTEGER")
    return int.from_bytes(value[start:end], "big", signed=True)


def der_string(value: bytes) -> str:
    tag, start, end = _tlv(value, 0)
    if tag not in (0x16, 0x0C, 0x13) or end != len(value):  # IA5String, UTF8String, Printable
        raise ValueError("not a DER string")
    return value[start:end].decode("ascii")


@dataclass(frozen=True)
class AmdCert:
    """One loaded AMD certificate with the exact bytes its issuer signed. Every field the
    verifier uses is read at load time, so a malformed certificate fails there, once."""

    der: bytes
    cert: x509.Certificate
    tbs: bytes
    signature: bytes
    common_name: str
    public_key: Any
    spki_sha256: str
    not_before: dt.datetime
    not_after: dt.datetime
    signature_oid: x509.ObjectIdentifier
    amd_extensions: Mapping[str, bytes]  # dotted OID → raw extension value

    def extension_bytes(self, oid: str) -> bytes | None:
        return self.amd_extensions.get(oid)


def _read_fields(der: bytes, cert: x509.Certificate, tbs: bytes, sig: bytes) -> AmdCert:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    key = cert.public_key()
    spki = key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)
    exts = {
        e.oid.dotted_string: e.value.value
        for e in cert.extensions
        if isinstance(e.value, x509.UnrecognizedExtension)
    }
    return AmdCert(
        der=der, cert=cert, tbs=tbs, signature=sig,
        common_name=str(names[0].value) if len(names) == 1 else "",
        public_key=key, spki_sha256=hashlib.sha256(spki).hexdigest(),
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
        signature_oid=cert.signature_algorithm_oid, amd_extensions=exts,
    )


#: What parsing hostile DER can raise: our own reader, base64, and ``cryptography``'s errors.
_PARSE_ERRORS = (ValueError, IndexError, UnicodeDecodeError, binascii.Error, UnsupportedAlgorithm,
                 x509.InvalidVersion, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)


def load_amd_cert(data: bytes, name: str) -> AmdCert:
    """Load a PEM or DER certificate, named ``name`` in errors (``vcek``, ``ask``, ``ark``...)."""
    if len(data) > MAX_CERT_BYTES:
        raise MalformedEvidence(f"{name} certificate exceeds {MAX_CERT_BYTES} bytes",
                                tee="snp", field=name)
    try:
        der = _pem_to_der(data) if data.lstrip().startswith(b"-----BEGIN") else data
        tbs, signature = _split_certificate(der)
        with warnings.catch_warnings():
            # Serial 0 is what AMD issues; the warning is about that and nothing else.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            try:
                loaded = _read_fields(der, x509.load_der_x509_certificate(der), tbs, signature)
            except ValueError:
                patched = _serial_zero_patched(der)
                if patched is None:
                    raise
                loaded = _read_fields(der, x509.load_der_x509_certificate(patched), tbs,
                                      signature)
    except _PARSE_ERRORS as e:
        raise MalformedEvidence(f"{name} certificate cannot be parsed: {e}",
                                tee="snp", field=name) from None
    return loaded


def verify_amd_signature(child: AmdCert, issuer: AmdCert, what: str) -> None:
    """Check that ``issuer`` signed ``child`` with RSASSA-PSS/SHA-384 (AMD's only scheme)."""
    if child.signature_oid != SignatureAlgorithmOID.RSASSA_PSS:
        raise ChainInvalid(f"{what}: signature algorithm is not RSASSA-PSS", tee="snp",
                           field=what)
    key = issuer.public_key
    if not isinstance(key, rsa.RSAPublicKey):
        raise ChainInvalid(f"{what}: issuer key is not RSA", tee="snp", field=what)
    try:
        key.verify(child.signature, child.tbs, AMD_PSS, hashes.SHA384())
    except InvalidSignature:
        raise ChainInvalid(f"{what}: signature does not verify", tee="snp",
                           field=what) from None


@dataclass(frozen=True)
class LeafExtensions:
    """The AMD extensions of a VCEK/VLEK (pub. 57230, Table 8)."""

    product_name: str | None
    spl: Mapping[str, int]  # bootloader/tee/snp/microcode(/fmc) → SPL
    hwid: bytes | None


#: hwID sizes: 64 bytes (Milan, Genoa: the whole CHIP_ID), 8 bytes (Turin: its first 8 bytes).
HWID_SIZES = (8, 64)


def _hwid(value: bytes) -> bytes:
    """The hwID: newer KDS certificates wrap it in a DER OCTET STRING, older ones carry it raw."""
    if len(value) >= 2 and value[0] == 0x04:
        try:
            _, start, end = _tlv(value, 0)
        except ValueError:
            end = -1
        if end == len(value) and end - start in HWID_SIZES:
            return value[start:end]
    if len(value) in HWID_SIZES:
        return value
    raise ValueError(f"hwID of {len(value)} bytes is neither raw nor an OCTET STRING")


def leaf_extensions(leaf: AmdCert) -> LeafExtensions:
    try:
        pn = leaf.extension_bytes(OID_PRODUCT_NAME)
        spl: dict[str, int] = {}
        for oid, comp in SPL_OIDS.items():
            raw = leaf.extension_bytes(oid)
            if raw is not None:
                spl[comp] = der_integer(raw)
        hw = leaf.extension_bytes(OID_HWID)
        return LeafExtensions(der_string(pn) if pn is not None else None, spl,
                              _hwid(hw) if hw is not None else None)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedEvidence(f"leaf certificate AMD extension malformed: {e}",
                                tee="snp", field="extensions") from None


@dataclass(frozen=True)
class VerifiedChain:
    """A chain whose signatures and ARK pin have been checked (dates are checked per call)."""

    product: str
    leaf_kind: str  # "VCEK" or "VLEK"
    leaf_key: ec.EllipticCurvePublicKey
    leaf: AmdCert
    validity: tuple[tuple[str, dt.datetime, dt.datetime], ...]  # (name, not_before, not_after)
    ark: AmdCert | None = None  # kept for the CRL check (arca.verifier.snp.tcbpolicy)
    intermediate: AmdCert | None = None  # the ASK or ASVK

    def check_validity(self, at: dt.datetime) -> None:
        for name, nb, na in self.validity:
            if not nb <= at <= na:
                raise Expired(
                    f"{name} certificate is not valid at {at.isoformat()} "
                    f"(valid {nb.isoformat()} to {na.isoformat()})",
                    tee="snp", field=name, expected=f"{nb.isoformat()}..{na.isoformat()}",
                    actual=at.isoformat(),
                )


class ChainVerifier:
    """Verifies ARK→ASK/ASVK→VCEK/VLEK chains against pinned ARKs, with a digest-keyed cache."""

    def __init__(self, pinned_arks: Mapping[str, str] = AMD_ARK_SPKI_SHA256) -> None:
        if not pinned_arks:
            raise ValueError("at least one pinned ARK is required (deny by default)")
        self._pins = {k.lower(): v for k, v in pinned_arks.items()}
        self._cache: OrderedDict[bytes, VerifiedChain] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, leaf_kind: str, leaf: bytes, ask: bytes, ark: bytes) -> VerifiedChain:
        h = hashlib.sha256(leaf_kind.encode())
        for part in (leaf, ask, ark):
            h.update(len(part).to_bytes(4, "big"))
            h.update(part)
        key = h.digest()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        chain = self._verify_uncached(leaf_kind, leaf, ask, ark)
        with self._lock:
            self._cache[key] = chain
            while len(self._cache) > CHAIN_CACHE_SIZE:
                self._cache.popitem(last=False)
        return chain

    def _verify_uncached(self, leaf_kind: str, leaf_b: bytes, ask_b: bytes,
                         ark_b: bytes) -> VerifiedChain:
        inter_name = "ask" if leaf_kind == "VCEK" else "asvk"
        leaf_name = leaf_kind.lower()
        ark = load_amd_cert(ark_b, "ark")
        ask = load_amd_cert(ask_b, inter_name)
        leaf = load_amd_cert(leaf_b, leaf_name)
        # 0. The leaf is of the type the report's SIGNING_KEY names (pub. 56860 Table 23).
        if leaf.common_name != f"SEV-{leaf_kind}":
            raise ChainInvalid(
                f"signing_key: report is signed by a {leaf_kind} but the leaf certificate is "
                f"{leaf.common_name!r}", tee="snp", field="signing_key",
            )
        # 1. The ARK is self-signed (pub. 57230 §2.1).
        verify_amd_signature(ark, ark, "ark")
        # 2. The ARK's key is one of the pinned AMD roots; its pin names the product.
        product = self._pins.get(ark.spki_sha256)
        if product is None:
            raise UntrustedRoot(
                f"ARK {ark.common_name!r} public key is not a pinned AMD root",
                tee="snp", field="ark", actual=ark.spki_sha256,
            )
        if ark.common_name != f"ARK-{product}":
            raise ChainInvalid(f"ark: CN {ark.common_name!r} is not ARK-{product}",
                               tee="snp", field="ark")
        # 3. The ASK (VCEK) or ASVK (VLEK) is signed by the ARK of the same product.
        want_cn = f"SEV-{product}" if leaf_kind == "VCEK" else f"SEV-VLEK-{product}"
        if ask.common_name != want_cn:
            raise ChainInvalid(f"{inter_name}: CN {ask.common_name!r} is not {want_cn}",
                               tee="snp", field=inter_name)
        verify_amd_signature(ask, ark, inter_name)
        # 4. The leaf is signed by the ASK/ASVK.
        verify_amd_signature(leaf, ask, leaf_name)
        key = leaf.public_key
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
            raise ChainInvalid(f"{leaf_name}: public key is not ECDSA P-384",
                               tee="snp", field=leaf_name)
        validity = tuple(
            (n, c.not_before, c.not_after)
            for n, c in ((leaf_name, leaf), (inter_name, ask), ("ark", ark))
        )
        return VerifiedChain(product, leaf_kind, key, leaf, validity, ark, ask)
