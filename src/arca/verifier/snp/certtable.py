"""SNP extended evidence: the report followed by the host's certificate table.

What it does: splits ``report ‖ table`` into the 1184-byte report and the DER certificates of
the table that ``SNP_GET_EXT_REPORT`` returns (GHCB specification, pub. 56421, "SNP Extended
Guest Request": entries of a 16-byte GUID, a u32 offset and a u32 length, offsets relative to
the table, ended by an all-zero entry). Known GUIDs map to the collateral names the verifier
uses (``vcek.pem``, ``vlek.pem``, ``ask.pem``, ``ark.pem``); other entries (e.g. a CRL) are
ignored.

What it does not do: trust the certificates. The host wrote the table; everything in it goes
through the same chain verification and ARK pinning as certificates from anywhere else.
"""

from __future__ import annotations

import struct
import uuid

from arca.errors import MalformedEvidence
from arca.verifier.snp.report import REPORT_SIZE

#: GHCB certificate table GUIDs → collateral names. The GHCB table has no ASVK GUID: with a
#: VLEK the ASK entry carries the ASVK.
CERT_GUIDS = {
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd").bytes: "vcek.pem",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1").bytes: "vlek.pem",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782").bytes: "ask.pem",
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae").bytes: "ark.pem",
}
ENTRY_SIZE = 24
#: The kernel hands the guest at most a few pages of certificates; four AMD certificates take
#: ~6 KiB. Bounds chosen so no table can make the verifier read or allocate much.
MAX_TABLE_BYTES = 64 * 1024
MAX_ENTRIES = 16


def _bad(detail: str) -> MalformedEvidence:
    return MalformedEvidence(f"SNP certificate table: {detail}", tee="snp", field="cert_table")


def split_evidence(evidence: bytes) -> tuple[bytes, dict[str, bytes]]:
    """(report bytes, {collateral name: DER}) of plain or extended SNP evidence.

    Entries may come in any order; data lies after the whole header (terminator included, as
    the GHCB table is laid out and go-sev-guest checks); an entry of length zero carries
    nothing and is skipped (its certificate, if needed, comes from the collateral source);
    entries with other GUIDs (a CRL, extra platform info) are ignored; bytes after the data
    (the rest of the guest's certificate pages) are not read.
    """
    if len(evidence) <= REPORT_SIZE:
        return evidence, {}
    table = evidence[REPORT_SIZE:]
    if len(table) > MAX_TABLE_BYTES:
        raise _bad(f"{len(table)} bytes exceeds {MAX_TABLE_BYTES}")
    entries: list[tuple[bytes, int, int]] = []
    for i in range(MAX_ENTRIES + 1):
        pos = i * ENTRY_SIZE
        if pos + ENTRY_SIZE > len(table):
            raise _bad("no terminating all-zero entry")
        guid = table[pos : pos + 16]
        offset, length = struct.unpack_from("<II", table, pos + 16)
        if not any(guid) and offset == 0 and length == 0:
            break
        entries.append((guid, offset, length))
    else:
        raise _bad(f"more than {MAX_ENTRIES} entries")
    header_end = (len(entries) + 1) * ENTRY_SIZE
    certs: dict[str, bytes] = {}
    for i, (guid, offset, length) in enumerate(entries):
        if length == 0:
            continue
        if offset < header_end or offset + length > len(table):
            raise _bad(f"entry {i} points outside the table's data ({offset}+{length})")
        name = CERT_GUIDS.get(guid)
        if name is None:
            continue
        if name in certs:
            raise _bad(f"{name} appears twice")
        certs[name] = table[offset : offset + length]
    return evidence[:REPORT_SIZE], certs


def join_evidence(report: bytes, certs: dict[str, bytes]) -> bytes:
    """Extended evidence from a report and DER certificates (what a guest agent sends)."""
    by_name = {name: guid for guid, name in CERT_GUIDS.items()}
    entries, blobs = [], b""
    start = ENTRY_SIZE * (len(certs) + 1)
    for name, der in certs.items():
        entries.append(by_name[name] + struct.pack("<II", start + len(blobs), len(der)))
        blobs += der
    return report + b"".join(entries) + bytes(ENTRY_SIZE) + blobs
