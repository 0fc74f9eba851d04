"""Minimal DER reader for the Intel SGX PCK certificate extension (private helper).

Only what the SGX extension uses: definite lengths, SEQUENCE, OBJECT IDENTIFIER, INTEGER,
OCTET STRING, ENUMERATED. Every length is checked against the bytes present; nesting depth and
element count are bounded by the caller's structure (the extension is at most two levels deep).
"""

from __future__ import annotations

from arca.errors import MalformedEvidence

SEQUENCE = 0x30
OID = 0x06
INTEGER = 0x02
OCTET_STRING = 0x04
ENUMERATED = 0x0A

#: The SGX extension is ~500 bytes; refuse anything implausibly large before walking it.
MAX_DER_SIZE = 4096


def _bad(detail: str) -> MalformedEvidence:
    return MalformedEvidence(f"pck_extension: {detail}", tee="dcap", field="pck_extension")


def read_tlvs(data: bytes) -> list[tuple[int, bytes]]:
    """Split ``data`` into its top-level (tag, content) elements; all bytes must be used."""
    if len(data) > MAX_DER_SIZE:
        raise _bad(f"{len(data)} bytes exceeds {MAX_DER_SIZE}")
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise _bad("truncated element header")
        tag = data[pos]
        if tag & 0x1F == 0x1F:
            raise _bad("high tag numbers are not used in the SGX extension")
        length = data[pos + 1]
        pos += 2
        if length & 0x80:
            n = length & 0x7F
            if n == 0 or n > 2 or pos + n > len(data):
                raise _bad("bad length encoding")
            length = int.from_bytes(data[pos:pos + n], "big")
            pos += n
        if pos + length > len(data):
            raise _bad(f"element of {length} bytes overruns its container")
        out.append((tag, data[pos:pos + length]))
        pos += length
    return out


def expect(tlv: tuple[int, bytes], tag: int, what: str) -> bytes:
    if tlv[0] != tag:
        raise _bad(f"{what}: tag {tlv[0]:#x}, expected {tag:#x}")
    return tlv[1]


def decode_oid(content: bytes) -> str:
    if not content or content[-1] & 0x80:
        raise _bad("bad OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def decode_uint(content: bytes, what: str) -> int:
    if not content or len(content) > 9 or content[0] & 0x80:
        raise _bad(f"{what}: not a small non-negative INTEGER")
    return int.from_bytes(content, "big")
