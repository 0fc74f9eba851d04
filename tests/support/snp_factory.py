"""Test evidence factory for AMD SEV-SNP: structurally valid reports under a throw-away AMD PKI.

Builds an ARK (self-signed, RSA-PSS/SHA-384 like AMD's), ASK and ASVK signed by it, VCEK/VLEK
leaves (ECDSA P-384, AMD extensions, serial number 0 as KDS issues them) and 1184-byte
ATTESTATION_REPORTs of version 2, 3 or 5 signed by the leaf. Every field can be overridden so
each failure test breaks exactly one thing. The verifier is given this PKI's ARK fingerprint
through its ``pinned_arks`` parameter; AMD's real roots are never involved.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CPUID = {"Milan": (0x19, 0x01, 0x01), "Genoa": (0x19, 0x11, 0x01), "Turin": (0x1A, 0x02, 0x00)}
AMD = "1.3.6.1.4.1.3704.1"


def _name(cn: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def _rsa_cert(subject: str, key: rsa.RSAPrivateKey, issuer: str, issuer_key: rsa.RSAPrivateKey,
              nb: dt.datetime, na: dt.datetime, serial: int) -> bytes:
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(subject)).issuer_name(_name(issuer))
        .public_key(key.public_key()).serial_number(serial)
        .not_valid_before(nb).not_valid_after(na)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA384(), rsa_padding=PSS)
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class SnpPki:
    product: str
    ark_key: rsa.RSAPrivateKey
    ark_pem: bytes
    ask_key: rsa.RSAPrivateKey
    ask_pem: bytes
    asvk_key: rsa.RSAPrivateKey
    asvk_pem: bytes

    @property
    def pins(self) -> dict[str, str]:
        spki = self.ark_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return {hashlib.sha256(spki).hexdigest(): self.product}


@functools.cache
def _rsa_key(tag: str) -> rsa.RSAPrivateKey:
    del tag  # one key per tag, cached: RSA generation is the slow part of the factory
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def make_pki(product: str = "Milan", *, ark_expired: bool = False, ask_expired: bool = False,
             tag: str = "") -> SnpPki:
    ark_key, ask_key, asvk_key = (_rsa_key(f"{product}{tag}-{n}") for n in ("ark", "ask", "asvk"))
    nb, na = NOW - dt.timedelta(days=3650), NOW + dt.timedelta(days=3650)
    ark_na = NOW - dt.timedelta(days=1) if ark_expired else na
    ask_na = NOW - dt.timedelta(days=1) if ask_expired else na
    ark = _rsa_cert(f"ARK-{product}", ark_key, f"ARK-{product}", ark_key, nb, ark_na, 0x10000)
    ask = _rsa_cert(f"SEV-{product}", ask_key, f"ARK-{product}", ark_key, nb, ask_na, 0x10001)
    asvk = _rsa_cert(f"SEV-VLEK-{product}", asvk_key, f"ARK-{product}", ark_key, nb, na, 0x10002)
    return SnpPki(product, ark_key, ark, ask_key, ask, asvk_key, asvk)


def _der_int(v: int) -> bytes:
    body = v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big")
    return bytes([0x02, len(body)]) + body


def make_leaf(pki: SnpPki, kind: str, key: ec.EllipticCurvePrivateKey, *, chip_id: bytes,
              tcb: dict[str, int], product_name: str | None = None, raw_hwid: bool = False,
              expired: bool = False, cn: str | None = None,
              signer: rsa.RSAPrivateKey | None = None) -> bytes:
    """A VCEK/VLEK PEM with AMD extensions and serial number 0, signed by the ASK/ASVK."""
    issuer = f"SEV-{pki.product}" if kind == "VCEK" else f"SEV-VLEK-{pki.product}"
    issuer_key = signer or (pki.ask_key if kind == "VCEK" else pki.asvk_key)
    nb = NOW - dt.timedelta(days=30)
    na = NOW - dt.timedelta(days=1) if expired else NOW + dt.timedelta(days=7 * 365)
    pn = (product_name or f"{pki.product}-B0").encode()
    exts: list[tuple[str, bytes]] = [(f"{AMD}.1", _der_int(0)),
                                     (f"{AMD}.2", bytes([0x16, len(pn)]) + pn)]
    oids = {"bootloader": "3.1", "tee": "3.2", "snp": "3.3", "microcode": "3.8", "fmc": "3.9"}
    exts += [(f"{AMD}.{oids[c]}", _der_int(v)) for c, v in tcb.items()]
    if kind == "VCEK":
        hwid = chip_id[:8] if pki.product == "Turin" else chip_id
        exts.append((f"{AMD}.4", hwid if raw_hwid else bytes([0x04, len(hwid)]) + hwid))
    b = (x509.CertificateBuilder()
         .subject_name(_name(cn or f"SEV-{kind}")).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(1)
         .not_valid_before(nb).not_valid_after(na))
    for oid, val in exts:
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), val),
                            critical=False)
    der = b.sign(issuer_key, hashes.SHA384(), rsa_padding=PSS).public_bytes(
        serialization.Encoding.DER)
    return _reissue_with_serial_zero(der, issuer_key)


def _reissue_with_serial_zero(der: bytes, issuer_key: rsa.RSAPrivateKey) -> bytes:
    """cryptography's builder refuses serial 0, which AMD KDS uses: patch it and re-sign."""
    cert = x509.load_der_x509_certificate(der)
    tbs, sig = cert.tbs_certificate_bytes, cert.signature
    marker = b"\xa0\x03\x02\x01\x02\x02\x01\x01"  # version v3, then serial INTEGER 1
    i = tbs.index(marker)
    new_tbs = tbs[: i + 7] + b"\x00" + tbs[i + 8 :]
    new_sig = issuer_key.sign(new_tbs, PSS, hashes.SHA384())
    assert len(new_sig) == len(sig)
    out = der.replace(tbs, new_tbs).replace(sig, new_sig)
    b64 = base64.b64encode(out).decode()
    body = "\n".join(b64[j : j + 64] for j in range(0, len(b64), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n".encode()


def tcb_bytes(product: str, c: dict[str, int]) -> bytes:
    if product == "Turin":
        return bytes([c.get("fmc", 0), c["bootloader"], c["tee"], c["snp"], 0, 0, 0,
                      c["microcode"]])
    return bytes([c["bootloader"], c["tee"], 0, 0, 0, 0, c["snp"], c["microcode"]])


@dataclass
class ReportFields:
    version: int = 2
    guest_svn: int = 7
    policy: int = 0x30000  # SMT allowed, reserved bit 17
    vmpl: int = 0
    signing_key: int = 0  # 0 VCEK, 1 VLEK
    report_data: bytes = bytes(range(64))
    measurement: bytes = b"\x11" * 48
    host_data: bytes = b"\x22" * 32
    chip_id: bytes = bytes(range(100, 164))
    reported_tcb: dict[str, int] = field(
        default_factory=lambda: {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115})
    cpuid: tuple[int, int, int] | None = None
    mit_vectors: tuple[int, int] = (0x5, 0x7)
    sig_algo: int = 1


def make_report(product: str, f: ReportFields, key: ec.EllipticCurvePrivateKey) -> bytes:
    buf = bytearray(0x4A0)
    struct.pack_into("<IIQ", buf, 0, f.version, f.guest_svn, f.policy)
    buf[0x10:0x20] = b"\x01" * 16
    buf[0x20:0x30] = b"\x02" * 16
    struct.pack_into("<II", buf, 0x30, f.vmpl, f.sig_algo)
    tcb = tcb_bytes(product, f.reported_tcb)
    buf[0x38:0x40] = tcb
    struct.pack_into("<QI", buf, 0x40, 0x1, f.signing_key << 2)
    buf[0x50:0x90] = f.report_data
    buf[0x90:0xC0] = f.measurement
    buf[0xC0:0xE0] = f.host_data
    buf[0x180:0x188] = tcb
    if f.version >= 3:
        buf[0x188:0x18B] = bytes(f.cpuid or CPUID[product])
    buf[0x1A0:0x1E0] = f.chip_id
    buf[0x1E0:0x1E8] = tcb
    buf[0x1E8:0x1EB] = bytes([3, 55, 1])
    buf[0x1F0:0x1F8] = tcb
    if f.version >= 5:
        struct.pack_into("<QQ", buf, 0x1F8, *f.mit_vectors)
    r, s = decode_dss_signature(key.sign(bytes(buf[:0x2A0]), ec.ECDSA(hashes.SHA384())))
    buf[0x2A0:0x2E8] = r.to_bytes(72, "little")
    buf[0x2E8:0x330] = s.to_bytes(72, "little")
    return bytes(buf)


class MemoryCollateral:
    """A collateral source backed by a dict (``get(name) -> bytes | None``)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)

    def get(self, name: str, context: Mapping[str, str] | None = None) -> bytes | None:
        return self.files.get(name)


@dataclass
class SnpCase:
    report: bytes
    files: dict[str, bytes]
    pins: dict[str, str]
    fields: ReportFields
    product: str

    def collateral(self) -> MemoryCollateral:
        return MemoryCollateral(self.files)


@functools.cache
def _leaf_key(tag: str) -> ec.EllipticCurvePrivateKey:
    del tag
    return ec.generate_private_key(ec.SECP384R1())


def build_case(product: str = "Milan", version: int = 2, kind: str = "VCEK", *,
               pki: SnpPki | None = None, leaf_opts: dict[str, Any] | None = None,
               report_key: ec.EllipticCurvePrivateKey | None = None,
               **overrides: Any) -> SnpCase:
    """One consistent case; ``overrides`` replace report fields, ``leaf_opts`` leaf options
    (``tcb``, ``chip_id``, ``expired``, ``product_name``, ``cn``, ``signer``, ``raw_hwid``)."""
    pki = pki or make_pki(product)
    f = ReportFields(version=version, signing_key=0 if kind == "VCEK" else 1)
    if product == "Turin":
        f.reported_tcb = {"fmc": 1, "bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
        f.chip_id = bytes(range(100, 108)) + bytes(56)
    if kind == "VLEK":
        f.chip_id = bytes(64)
    f = replace(f, **overrides)
    key = _leaf_key(f"{product}-{kind}")
    lo = {"tcb": dict(f.reported_tcb), "chip_id": f.chip_id, **(leaf_opts or {})}
    leaf = make_leaf(pki, kind, key, **lo)
    report = make_report(product, f, report_key or key)
    files = {"ark.pem": pki.ark_pem}
    if kind == "VCEK":
        files.update({"vcek.pem": leaf, "ask.pem": pki.ask_pem})
    else:
        files.update({"vlek.pem": leaf, "asvk.pem": pki.asvk_pem})
    return SnpCase(report, files, pki.pins, f, product)
