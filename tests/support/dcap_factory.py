"""Test evidence factory for Intel DCAP: structurally valid SGX v3 / TDX v4 / TDX v5 quotes and
their collateral (PCK chain with SGX extension, TCB Info, QE Identity, CRLs) under a throw-away
test PKI. Verifiers pin the test root with ``trusted_root_spki_sha256=[bundle.root_fp]``.

``DcapFactory().build(...)`` takes the platform's TCB, measurements, collateral levels and a set
of named defects (``breaks``) so each failure test changes exactly one thing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from arca.verifier.dcap.pck import spki_sha256
from arca.verifier.dcap.quote import INTEL_QE_VENDOR_ID

UTC = dt.UTC
AT = dt.datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
CERT_FROM = dt.datetime(2024, 1, 1, tzinfo=UTC)
CERT_UNTIL = dt.datetime(2030, 1, 1, tzinfo=UTC)
COLL_ISSUED = dt.datetime(2025, 5, 15, tzinfo=UTC)
COLL_NEXT = dt.datetime(2025, 6, 15, tzinfo=UTC)
CRL_THIS = dt.datetime(2025, 5, 20, tzinfo=UTC)
CRL_NEXT = dt.datetime(2025, 6, 20, tzinfo=UTC)

SGX_OID = "1.2.840.113741.1.13.1"
QE_MRSIGNER = bytes.fromhex("8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff")
TD_QE_MRSIGNER = bytes.fromhex("dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5")
FMSPC = bytes.fromhex("00a06f000000")
PCE_ID = bytes(2)
PCK_TCB = (3, 3, 2, 2, 4, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0)
PCE_SVN = 11
TEE_TCB_SVN = bytes([3, 1, 2] + [0] * 13)
QE_SVN = 4

#: Defects ``build`` can inject, one per verification check.
BREAKS = frozenset({
    "quote_signature", "qe_report_signature", "qe_report_data", "attestation_key",
    "pck_signed_by_other", "ca_signed_by_other", "root_not_self_signed",
    "tcb_info_signature", "qe_identity_signature", "tcb_signing_by_other",
})


# --- DER encoding (just enough for the SGX extension) ------------------------------------------

def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for a in arcs[2:]:
        chunk = [a & 0x7F]
        a >>= 7
        while a:
            chunk.append(0x80 | (a & 0x7F))
            a >>= 7
        out += bytes(reversed(chunk))
    return _der(0x06, bytes(out))


def _int(n: int) -> bytes:
    raw = n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big")
    return _der(0x02, raw)


def _seq(*items: bytes) -> bytes:
    return _der(0x30, b"".join(items))


def sgx_extension(fmspc: bytes = FMSPC, pce_id: bytes = PCE_ID, tcb: tuple[int, ...] = PCK_TCB,
                  pce_svn: int = PCE_SVN, cpu_svn: bytes | None = None) -> bytes:
    comps = [_seq(_oid(f"{SGX_OID}.2.{i + 1}"), _int(v)) for i, v in enumerate(tcb)]
    comps.append(_seq(_oid(f"{SGX_OID}.2.17"), _int(pce_svn)))
    comps.append(_seq(_oid(f"{SGX_OID}.2.18"), _der(0x04, cpu_svn or bytes(tcb))))
    return _seq(
        _seq(_oid(f"{SGX_OID}.1"), _der(0x04, bytes(range(16)))),
        _seq(_oid(f"{SGX_OID}.2"), _seq(*comps)),
        _seq(_oid(f"{SGX_OID}.3"), _der(0x04, pce_id)),
        _seq(_oid(f"{SGX_OID}.4"), _der(0x04, fmspc)),
        _seq(_oid(f"{SGX_OID}.5"), _der(0x0A, b"\x00")),
    )


# --- PKI -----------------------------------------------------------------------------------------

def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Arca Test")])


def make_cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
              issuer_key: ec.EllipticCurvePrivateKey, serial: int, *, ca: bool,
              not_before: dt.datetime = CERT_FROM, not_after: dt.datetime = CERT_UNTIL,
              sgx_ext: bytes | None = None) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(serial)
         .not_valid_before(not_before).not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sgx_ext is not None:
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_OID), sgx_ext),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def make_crl(issuer: str, key: ec.EllipticCurvePrivateKey, revoked: list[int],
             this: dt.datetime = CRL_THIS, nxt: dt.datetime = CRL_NEXT) -> bytes:
    b = (x509.CertificateRevocationListBuilder().issuer_name(_name(issuer))
         .last_update(this).next_update(nxt))
    for s in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(s)
                                      .revocation_date(this).build())
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def raw_sig(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


# --- quote structures ----------------------------------------------------------------------------

def sgx_body(*, mrenclave: bytes = b"\x11" * 32, mrsigner: bytes = b"\x22" * 32,
             isv_prod_id: int = 1, isv_svn: int = 2, attributes: bytes | None = None,
             config_id: bytes = bytes(64), report_data: bytes = bytes(64), debug: bool = False,
             misc_select: int = 0, cpu_svn: bytes = bytes(16)) -> bytes:
    b = bytearray(384)
    b[0:16] = cpu_svn
    b[16:20] = misc_select.to_bytes(4, "little")
    attrs = bytearray(attributes or bytes.fromhex("0500000000000000e700000000000000"))
    if debug:
        attrs[0] |= 0x02
    b[0x30:0x40] = attrs
    b[0x40:0x60] = mrenclave
    b[0x80:0xA0] = mrsigner
    b[0xC0:0x100] = config_id
    struct.pack_into("<HHH", b, 0x100, isv_prod_id, isv_svn, 0)
    b[0x140:0x180] = report_data
    return bytes(b)


def td_body(*, tee_tcb_svn: bytes = TEE_TCB_SVN, mrsigner_seam: bytes = bytes(48),
            seam_attributes: bytes = bytes(8), debug: bool = False, mrtd: bytes = b"\x33" * 48,
            mrconfigid: bytes = bytes(48), report_data: bytes = bytes(64),
            tee_tcb_svn2: bytes | None = None) -> bytes:
    b = bytearray(648 if tee_tcb_svn2 is not None else 584)
    b[0:16] = tee_tcb_svn
    b[16:64] = b"\x44" * 48  # MRSEAM
    b[64:112] = mrsigner_seam
    b[112:120] = seam_attributes
    b[120:128] = bytes([0x01 if debug else 0x00, 0, 0, 0x10, 0, 0, 0, 0])
    b[128:136] = bytes.fromhex("e718060000000000")
    b[136:184] = mrtd
    b[184:232] = mrconfigid
    for i in range(4):
        b[328 + 48 * i:376 + 48 * i] = bytes([0x50 + i]) * 48
    b[520:584] = report_data
    if tee_tcb_svn2 is not None:
        b[584:600] = tee_tcb_svn2
    return bytes(b)


# --- collateral documents ---------------------------------------------------------------

def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def tcb_level(status: str, sgx: tuple[int, ...] = PCK_TCB, pcesvn: int = PCE_SVN,
              tdx: bytes | None = TEE_TCB_SVN, advisories: tuple[str, ...] = ()) -> dict[str, Any]:
    tcb: dict[str, Any] = {"sgxtcbcomponents": [{"svn": v} for v in sgx], "pcesvn": pcesvn}
    if tdx is not None:
        tcb["tdxtcbcomponents"] = [{"svn": v} for v in tdx]
    lvl: dict[str, Any] = {"tcb": tcb, "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": status}
    if advisories:
        lvl["advisoryIDs"] = list(advisories)
    return lvl


def isv_level(isvsvn: int, status: str, advisories: tuple[str, ...] = ()) -> dict[str, Any]:
    lvl: dict[str, Any] = {"tcb": {"isvsvn": isvsvn}, "tcbDate": "2024-01-01T00:00:00Z",
                           "tcbStatus": status}
    if advisories:
        lvl["advisoryIDs"] = list(advisories)
    return lvl


def signed_doc(key_name: str, inner: dict[str, Any], key: ec.EllipticCurvePrivateKey,
               tamper: bool = False) -> bytes:
    text = json.dumps(inner, separators=(",", ":"))
    sig = raw_sig(key, text.encode())
    if tamper:  # change the signed text after signing
        text = text.replace('"version":', '"version": ', 1)
    return f'{{"{key_name}":{text},"signature":"{sig.hex()}"}}'.encode()


@dataclass
class DcapBundle:
    quote: bytes
    collateral: dict[str, bytes]
    root_fp: bytes
    at: dt.datetime = AT
    serials: dict[str, int] = field(default_factory=dict)

    def verifier(self, tee: str | None = None, *, collateral: bool = True,
                 pin: bytes | None = None) -> Any:
        from arca.verifier.collateral import MemoryCollateral
        from arca.verifier.dcap import SgxVerifier, TdxVerifier
        cls = TdxVerifier if (tee or ("tdx" if self.quote[4] == 0x81 else "sgx")) == "tdx" \
            else SgxVerifier
        return cls(MemoryCollateral(self.collateral) if collateral else None,
                   trusted_root_spki_sha256=[pin or self.root_fp])


class DcapFactory:
    """Holds the throw-away keys; ``build`` makes fresh certificates and documents per call."""

    def __init__(self) -> None:
        self.root_key = _key()
        self.ca_key = _key()
        self.pck_key = _key()
        self.signing_key = _key()
        self.att_key = _key()
        self.other_key = _key()

    def build(self, *, tee: str = "tdx", version: int | None = None, td15: bool = False,
              report_data: bytes = bytes(64), init_data: bytes | None = None,
              debug: bool = False, tee_tcb_svn: bytes = TEE_TCB_SVN,
              tee_tcb_svn2: bytes | None = None, pck_tcb: tuple[int, ...] = PCK_TCB,
              pce_svn: int = PCE_SVN, qe_svn: int = QE_SVN,
              tcb_levels: list[dict[str, Any]] | None = None,
              module_levels: list[dict[str, Any]] | None = None,
              qe_levels: list[dict[str, Any]] | None = None,
              mrsigner_seam: bytes = bytes(48), qe_mrsigner: bytes | None = None,
              tcb_info_fmspc: bytes = FMSPC, tcb_info_id: str | None = None,
              tcb_info_version: int = 3,
              pck_not_after: dt.datetime = CERT_UNTIL,
              tcb_next_update: dt.datetime = COLL_NEXT, qe_next_update: dt.datetime = COLL_NEXT,
              crl_next_update: dt.datetime = CRL_NEXT, revoke: tuple[str, ...] = (),
              breaks: frozenset[str] | set[str] = frozenset()) -> DcapBundle:
        unknown = set(breaks) - BREAKS
        assert not unknown, unknown
        version = version or (3 if tee == "sgx" else 4)
        if td15:
            version = 5
            tee_tcb_svn2 = tee_tcb_svn2 if tee_tcb_svn2 is not None else tee_tcb_svn

        # PKI: root -> PCK CA -> PCK leaf; root -> TCB signing.
        other = self.other_key
        root = make_cert("Test SGX Root CA", self.root_key, "Test SGX Root CA",
                         other if "root_not_self_signed" in breaks else self.root_key, 1, ca=True)
        ca = make_cert("Test SGX PCK Platform CA", self.ca_key, "Test SGX Root CA",
                       other if "ca_signed_by_other" in breaks else self.root_key, 2, ca=True)
        leaf = make_cert("Test SGX PCK Certificate", self.pck_key, "Test SGX PCK Platform CA",
                         other if "pck_signed_by_other" in breaks else self.ca_key, 3, ca=False,
                         not_after=pck_not_after,
                         sgx_ext=sgx_extension(tcb=pck_tcb, pce_svn=pce_svn))
        signing = make_cert("Test SGX TCB Signing", self.signing_key, "Test SGX Root CA",
                            other if "tcb_signing_by_other" in breaks else self.root_key, 4,
                            ca=False)

        # Body.
        if tee == "sgx":
            body = sgx_body(report_data=report_data, debug=debug,
                            config_id=init_data if init_data is not None else bytes(64))
            tee_type, body_type = 0, 1
        else:
            body = td_body(tee_tcb_svn=tee_tcb_svn, report_data=report_data, debug=debug,
                           mrconfigid=init_data if init_data is not None else bytes(48),
                           mrsigner_seam=mrsigner_seam,
                           tee_tcb_svn2=tee_tcb_svn2 if version == 5 and td15 else None)
            tee_type, body_type = 0x81, 3 if td15 else 2
        header = struct.pack("<HHIHH16s20s", version, 2, tee_type if version > 3 else 0,
                             qe_svn if version == 3 else 0, pce_svn if version == 3 else 0,
                             INTEL_QE_VENDOR_ID, bytes(20))
        signed = header + (struct.pack("<HI", body_type, len(body)) if version == 5 else b"") \
            + body

        # Signature data.
        att_pub = self.att_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]
        auth = bytes(range(32))
        qe_rd = hashlib.sha256(att_pub + auth).digest() + bytes(32)
        if "qe_report_data" in breaks:
            qe_rd = bytes([qe_rd[0] ^ 1]) + qe_rd[1:]
        mrsigner = qe_mrsigner or (TD_QE_MRSIGNER if tee == "tdx" else QE_MRSIGNER)
        qe_report = sgx_body(mrenclave=b"\x66" * 32, mrsigner=mrsigner,
                             isv_prod_id=2 if tee == "tdx" else 1, isv_svn=qe_svn,
                             attributes=bytes.fromhex("11000000000000000000000000000000"),
                             report_data=qe_rd)
        qe_sig = raw_sig(self.pck_key, qe_report)
        if "qe_report_signature" in breaks:
            qe_sig = raw_sig(other, qe_report)
        quote_sig = raw_sig(other if "quote_signature" in breaks else self.att_key, signed)
        if "attestation_key" in breaks:  # a key that is not the one the QE report binds
            att_pub = other.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]
        chain = pem(leaf, ca, root)
        pck_part = struct.pack("<HI", 5, len(chain)) + chain
        qe_part = qe_report + qe_sig + struct.pack("<H", len(auth)) + auth
        if version == 3:
            sig_data = quote_sig + att_pub + qe_part + pck_part
        else:
            inner = qe_part + pck_part
            sig_data = quote_sig + att_pub + struct.pack("<HI", 6, len(inner)) + inner
        quote = signed + struct.pack("<I", len(sig_data)) + sig_data

        # Collateral.
        tdx_levels = tee == "tdx"
        levels = tcb_levels or [tcb_level("UpToDate", pck_tcb, pce_svn,
                                          tee_tcb_svn if tdx_levels else None)]
        info: dict[str, Any] = {
            "id": tcb_info_id or tee.upper(), "version": 3, "issueDate": _iso(COLL_ISSUED),
            "nextUpdate": _iso(tcb_next_update), "fmspc": tcb_info_fmspc.hex().upper(),
            "pceId": "0000", "tcbType": 0, "tcbEvaluationDataNumber": 17,
        }
        if tee == "tdx":
            zero = "00" * 48
            info["tdxModule"] = {"mrsigner": zero, "attributes": "0000000000000000",
                                 "attributesMask": "FFFFFFFFFFFFFFFF"}
            info["tdxModuleIdentities"] = [{
                "id": "TDX_01", "mrsigner": zero, "attributes": "0000000000000000",
                "attributesMask": "FFFFFFFFFFFFFFFF",
                "tcbLevels": module_levels or [isv_level(tee_tcb_svn[0], "UpToDate")],
            }]
        info["tcbLevels"] = levels
        if tcb_info_version == 2:  # SGX only: flat component names, no id
            del info["id"]
            info["version"] = 2
            info["tcbLevels"] = [
                {**lvl, "tcb": {**{f"sgxtcbcomp{i + 1:02d}svn": c["svn"] for i, c in
                                   enumerate(lvl["tcb"]["sgxtcbcomponents"])},
                                "pcesvn": lvl["tcb"]["pcesvn"]}} for lvl in levels]
        qe_id = {
            "id": "TD_QE" if tee == "tdx" else "QE", "version": 2,
            "issueDate": _iso(COLL_ISSUED), "nextUpdate": _iso(qe_next_update),
            "tcbEvaluationDataNumber": 17, "miscselect": "00000000",
            "miscselectMask": "FFFFFFFF", "attributes": "11000000000000000000000000000000",
            "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
            "mrsigner": (TD_QE_MRSIGNER if tee == "tdx" else QE_MRSIGNER).hex().upper(),
            "isvprodid": 2 if tee == "tdx" else 1,
            "tcbLevels": qe_levels or [isv_level(qe_svn, "UpToDate")],
        }
        signing_chain = pem(signing, root)
        serials = {"root": 1, "ca": 2, "pck": 3, "signing": 4}
        collateral = {
            "tcb_info.json": signed_doc("tcbInfo", info, self.signing_key,
                                        "tcb_info_signature" in breaks),
            "tcb_info_issuer_chain.pem": signing_chain,
            "qe_identity.json": signed_doc("enclaveIdentity", qe_id, self.signing_key,
                                           "qe_identity_signature" in breaks),
            "qe_identity_issuer_chain.pem": signing_chain,
            "pck_crl.der": make_crl("Test SGX PCK Platform CA", self.ca_key,
                                    [serials["pck"]] if "pck" in revoke else [],
                                    nxt=crl_next_update),
            "pck_crl_issuer_chain.pem": pem(ca, root),
            "root_ca_crl.der": make_crl("Test SGX Root CA", self.root_key,
                                        [serials[r] for r in revoke if r in ("ca", "signing")],
                                        nxt=crl_next_update),
        }
        return DcapBundle(quote, collateral, spki_sha256(root), AT, serials)
