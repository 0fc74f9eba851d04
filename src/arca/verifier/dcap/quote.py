"""Intel DCAP quote parser: quote versions 3 (SGX), 4 and 5 (SGX and TDX).

Pure parsing into frozen, typed models; no cryptography and no policy. Every length field is
checked against the bytes actually present and against a named upper bound before use. Only
zero padding may follow the signature data (real quotes come in fixed-size buffers); any
other byte after it is refused.

Layouts follow the *Intel SGX ECDSA Quote Library Reference (DCAP)* (quote v3, appendix A) and
the *Intel TDX DCAP Quoting Library API* (quote v4 and v5, appendix A). Offsets in comments are
relative to the start of the structure they describe. All integers are little-endian.

Not here: signature checks, PCK certificate parsing (see :mod:`.pck`), TCB evaluation.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from arca.errors import MalformedEvidence

#: Upper bound for a whole quote. Real quotes are 4-6 KiB (the PCK chain dominates); 64 KiB
#: leaves room for larger chains while bounding the work an attacker can cause.
MAX_QUOTE_SIZE = 64 * 1024
#: Upper bound for the embedded certification data (PEM chain of three certificates ~ 4 KiB).
MAX_CERT_DATA_SIZE = 32 * 1024

HEADER_SIZE = 48
SGX_REPORT_SIZE = 384
TD10_REPORT_SIZE = 584
TD15_REPORT_SIZE = 648

ATT_KEY_TYPE_ECDSA_P256 = 2
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
#: QE vendor ID of the Intel quoting enclaves (939A7233-F79C-4CA9-940A-0DB3957F0607).
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

#: Certification data types (DCAP quote library reference, "Certification Data Type").
CERT_TYPE_PCK_CHAIN = 5
CERT_TYPE_QE_REPORT = 6
CERT_TYPE_PLATFORM_MANIFEST = 7

#: Quote v5 body types (TDX DCAP quoting library, "Quote Body").
BODY_TYPE_SGX = 1
BODY_TYPE_TD10 = 2
BODY_TYPE_TD15 = 3
_BODY_SIZES = {BODY_TYPE_SGX: SGX_REPORT_SIZE, BODY_TYPE_TD10: TD10_REPORT_SIZE,
               BODY_TYPE_TD15: TD15_REPORT_SIZE}


def _bad(field: str, detail: str, tee: str = "dcap") -> MalformedEvidence:
    return MalformedEvidence(f"{field}: {detail}", tee=tee, field=field)


class _Reader:
    """Bounds-checked cursor over a byte string; every read names the field it reads."""

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = start
        self.end = len(data) if end is None else end

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise _bad(field, f"needs {n} bytes at offset {self.pos}, "
                              f"{max(self.end - self.pos, 0)} present")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "little")

    def u32(self, field: str) -> int:
        return int.from_bytes(self.take(4, field), "little")


@dataclass(frozen=True)
class QuoteHeader:
    """Quote header, 48 bytes (identical layout for v3, v4, v5 apart from field meaning)."""

    version: int          # 0x00 u16
    att_key_type: int     # 0x02 u16: 2 = ECDSA-256-with-P-256
    tee_type: int         # 0x04 u32: 0 = SGX, 0x81 = TDX (v3: reserved, always SGX)
    qe_svn: int           # 0x08 u16 (v3; reserved in v4/v5)
    pce_svn: int          # 0x0A u16 (v3; reserved in v4/v5)
    qe_vendor_id: bytes   # 0x0C 16 bytes
    user_data: bytes      # 0x1C 20 bytes: first 16 are the platform's QE ID


@dataclass(frozen=True)
class SgxReportBody:
    """SGX enclave REPORTBODY, 384 bytes (SGX SDM, "REPORT" structure)."""

    cpu_svn: bytes          # 0x000 16
    misc_select: int        # 0x010 u32
    isv_ext_prod_id: bytes  # 0x020 16  (0x014: 12 reserved)
    attributes: bytes       # 0x030 16: FLAGS (u64) then XFRM (u64)
    mr_enclave: bytes       # 0x040 32
    mr_signer: bytes        # 0x080 32  (0x060: 32 reserved)
    config_id: bytes        # 0x0C0 64  (0x0A0: 32 reserved)
    isv_prod_id: int        # 0x100 u16
    isv_svn: int            # 0x102 u16
    config_svn: int         # 0x104 u16
    isv_family_id: bytes    # 0x130 16  (0x106: 42 reserved)
    report_data: bytes      # 0x140 64

    @property
    def debug(self) -> bool:
        # ATTRIBUTES.FLAGS bit 1 is DEBUG (SGX SDM 38.7.1).
        return bool(self.attributes[0] & 0x02)


@dataclass(frozen=True)
class TdReportBody:
    """TDX TD quote body: TD report 1.0 (584 bytes) or 1.5 (648 bytes)."""

    tee_tcb_svn: bytes      # 0x000 16
    mr_seam: bytes          # 0x010 48
    mr_signer_seam: bytes   # 0x040 48
    seam_attributes: bytes  # 0x070 8
    td_attributes: bytes    # 0x078 8
    xfam: bytes             # 0x080 8
    mr_td: bytes            # 0x088 48
    mr_config_id: bytes     # 0x0B8 48
    mr_owner: bytes         # 0x0E8 48
    mr_owner_config: bytes  # 0x118 48
    rtmrs: tuple[bytes, bytes, bytes, bytes]  # 0x148 4 x 48
    report_data: bytes      # 0x208 64
    tee_tcb_svn2: bytes | None = None   # 0x248 16 (TD 1.5 only)
    mr_service_td: bytes | None = None  # 0x258 48 (TD 1.5 only)

    @property
    def debug(self) -> bool:
        # TDATTRIBUTES bit 0 is TUD.DEBUG (TDX module ABI, TD attributes).
        return bool(self.td_attributes[0] & 0x01)


@dataclass(frozen=True)
class QeReport:
    """The quoting enclave's own SGX report, signed by the PCK key."""

    raw: bytes               # the 384 signed bytes
    body: SgxReportBody


@dataclass(frozen=True)
class QuoteSignature:
    """ECDSA quote signature data (v3: directly; v4/v5: with type-6 certification data)."""

    signature: bytes          # 64: r || s over header + body by the attestation key
    attestation_key: bytes    # 64: x || y of the P-256 attestation key
    qe_report: QeReport
    qe_report_signature: bytes  # 64: r || s over the QE report by the PCK key
    qe_auth_data: bytes
    cert_type: int            # innermost certification data type (5 for a PCK chain)
    cert_data: bytes


@dataclass(frozen=True)
class Quote:
    raw: bytes
    header: QuoteHeader
    body_type: int            # v5 body type; for v3/v4 derived from the TEE type
    body: SgxReportBody | TdReportBody
    signed_region: bytes      # header + (v5 body descriptor) + body: what the quote signs
    signature: QuoteSignature

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def tee(self) -> str:
        return "tdx" if self.header.tee_type == TEE_TYPE_TDX else "sgx"


def _parse_header(r: _Reader) -> QuoteHeader:
    version = r.u16("header.version")
    if version not in (3, 4, 5):
        raise _bad("header.version", f"unsupported quote version {version} (3, 4 or 5)")
    att_key_type = r.u16("header.att_key_type")
    if att_key_type != ATT_KEY_TYPE_ECDSA_P256:
        raise _bad("header.att_key_type",
                   f"attestation key type {att_key_type} unsupported (2 = ECDSA P-256)")
    tee_type = r.u32("header.tee_type")
    if version == 3:
        tee_type = TEE_TYPE_SGX  # v3 quotes are SGX only; the field is reserved there
    elif tee_type not in (TEE_TYPE_SGX, TEE_TYPE_TDX):
        raise _bad("header.tee_type", f"unknown TEE type {tee_type:#x}")
    qe_svn = r.u16("header.qe_svn")
    pce_svn = r.u16("header.pce_svn")
    vendor = r.take(16, "header.qe_vendor_id")
    if vendor != INTEL_QE_VENDOR_ID:
        raise _bad("header.qe_vendor_id", f"{vendor.hex()} is not the Intel QE vendor ID")
    user_data = r.take(20, "header.user_data")
    return QuoteHeader(version, att_key_type, tee_type, qe_svn, pce_svn, vendor, user_data)


def parse_sgx_report_body(b: bytes) -> SgxReportBody:
    if len(b) != SGX_REPORT_SIZE:
        raise _bad("sgx_report", f"{len(b)} bytes, expected {SGX_REPORT_SIZE}")
    isv_prod_id, isv_svn, config_svn = struct.unpack_from("<HHH", b, 0x100)
    return SgxReportBody(
        cpu_svn=b[0:16], misc_select=int.from_bytes(b[16:20], "little"),
        isv_ext_prod_id=b[0x20:0x30], attributes=b[0x30:0x40], mr_enclave=b[0x40:0x60],
        mr_signer=b[0x80:0xA0], config_id=b[0xC0:0x100], isv_prod_id=isv_prod_id,
        isv_svn=isv_svn, config_svn=config_svn, isv_family_id=b[0x130:0x140],
        report_data=b[0x140:0x180],
    )


def parse_td_report_body(b: bytes) -> TdReportBody:
    if len(b) not in (TD10_REPORT_SIZE, TD15_REPORT_SIZE):
        raise _bad("td_report", f"{len(b)} bytes, expected {TD10_REPORT_SIZE} or "
                                f"{TD15_REPORT_SIZE}", "tdx")
    rt = 0x148
    v15 = len(b) == TD15_REPORT_SIZE
    return TdReportBody(
        tee_tcb_svn=b[0:16], mr_seam=b[16:64], mr_signer_seam=b[64:112],
        seam_attributes=b[112:120], td_attributes=b[120:128], xfam=b[128:136],
        mr_td=b[136:184], mr_config_id=b[184:232], mr_owner=b[232:280],
        mr_owner_config=b[280:328],
        rtmrs=(b[rt:rt + 48], b[rt + 48:rt + 96], b[rt + 96:rt + 144], b[rt + 144:rt + 192]),
        report_data=b[520:584],
        tee_tcb_svn2=b[584:600] if v15 else None, mr_service_td=b[600:648] if v15 else None,
    )


def _parse_cert_data(r: _Reader, field: str) -> tuple[int, bytes]:
    cert_type = r.u16(f"{field}.type")
    size = r.u32(f"{field}.size")
    if size > MAX_CERT_DATA_SIZE:
        raise _bad(f"{field}.size", f"{size} bytes exceeds the limit of {MAX_CERT_DATA_SIZE}")
    return cert_type, r.take(size, f"{field}.data")


def _parse_qe_part(r: _Reader) -> tuple[QeReport, bytes, bytes]:
    raw = r.take(SGX_REPORT_SIZE, "qe_report")
    sig = r.take(64, "qe_report_signature")
    auth_size = r.u16("qe_auth_data.size")
    auth = r.take(auth_size, "qe_auth_data")
    return QeReport(raw, parse_sgx_report_body(raw)), sig, auth


def _parse_signature(data: bytes, version: int) -> QuoteSignature:
    r = _Reader(data)
    signature = r.take(64, "quote_signature")
    att_key = r.take(64, "attestation_key")
    if version == 3:
        qe_report, qe_sig, auth = _parse_qe_part(r)
        cert_type, cert_data = _parse_cert_data(r, "certification_data")
    else:
        outer_type, outer = _parse_cert_data(r, "certification_data")
        if outer_type != CERT_TYPE_QE_REPORT:
            raise _bad("certification_data.type",
                       f"type {outer_type} in a v{version} quote, expected 6 (QE report)")
        inner = _Reader(outer)
        qe_report, qe_sig, auth = _parse_qe_part(inner)
        cert_type, cert_data = _parse_cert_data(inner, "qe_certification_data")
        if inner.pos != inner.end:
            raise _bad("certification_data", f"{inner.end - inner.pos} unexpected bytes after "
                                             "the QE certification data")
    if r.pos != r.end:
        raise _bad("signature_data", f"{r.end - r.pos} unexpected bytes after the "
                                     "certification data")
    if cert_type != CERT_TYPE_PCK_CHAIN:
        raise _bad("certification_data.type",
                   f"type {cert_type} carries no PCK certificate chain (only type 5 is "
                   "verifiable offline)")
    return QuoteSignature(signature, att_key, qe_report, qe_sig, auth, cert_type, cert_data)


def parse_quote(data: bytes) -> Quote:
    """Parse a DCAP quote (v3/v4/v5). Raises :class:`MalformedEvidence` naming the bad field."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("quote must be bytes")
    data = bytes(data)
    if len(data) > MAX_QUOTE_SIZE:
        raise _bad("quote", f"{len(data)} bytes exceeds the limit of {MAX_QUOTE_SIZE}")
    r = _Reader(data)
    header = _parse_header(r)
    if header.version == 5:
        body_type = r.u16("body.type")
        body_size = r.u32("body.size")
        expected = _BODY_SIZES.get(body_type)
        if expected is None:
            raise _bad("body.type", f"unknown body type {body_type}")
        if body_size != expected:
            raise _bad("body.size", f"{body_size} bytes for body type {body_type}, "
                                    f"expected {expected}")
        if (body_type == BODY_TYPE_SGX) != (header.tee_type == TEE_TYPE_SGX):
            raise _bad("body.type", f"body type {body_type} does not match TEE type "
                                    f"{header.tee_type:#x}")
    else:
        body_type = BODY_TYPE_TD10 if header.tee_type == TEE_TYPE_TDX else BODY_TYPE_SGX
        body_size = _BODY_SIZES[body_type]
    raw_body = r.take(body_size, "body")
    signed_region = data[:r.pos]
    body: SgxReportBody | TdReportBody
    if body_type == BODY_TYPE_SGX:
        body = parse_sgx_report_body(raw_body)
    else:
        body = parse_td_report_body(raw_body)
    sig_len = r.u32("signature_data.size")
    sig_data = r.take(sig_len, "signature_data")
    # Quote generators hand the quote out in a fixed-size buffer (the TDX guest driver's, a
    # QGS reply): real quotes arrive followed by zero padding (ADR 0062). Zeros carry
    # nothing; any other trailing byte is refused.
    if any(data[r.pos:]):
        raise _bad("quote", f"{len(data) - r.pos} unexpected bytes after the signature data "
                            "(only zero padding may follow a quote)")
    return Quote(data, header, body_type, body, signed_region,
                 _parse_signature(sig_data, header.version))
