"""TDX reference values from files: MRTD from the TDVF, RTMR1/RTMR2 of a direct kernel boot.

What it computes (algorithms described in ``research/vm_backends.md`` §2.2-2.3; sources: the
Intel TDX module ABI ``TDH.MEM.PAGE.ADD``/``TDH.MR.EXTEND``, the TDVF design guide's metadata
table, and edk2's TDX measured boot):

* **MRTD**: SHA-384 over 128-byte records, for every 4 KiB page of every TDVF metadata section
  that the VMM adds at build time (not ``PAGE.AUG``): a ``MEM.PAGE.ADD`` record with the page's
  GPA, then, for sections with ``MR.EXTEND``, 16 ``MR.EXTEND`` records (one per 256-byte
  chunk, GPA of the chunk) each followed by the chunk's bytes. Page by page ("single pass"):
  the order QEMU >= 9 with KVM produces.
* **RTMR1** (OS loader): the PE/COFF Authenticode SHA-384 of the kernel as the firmware loads
  it, then the four ``EV_EFI_ACTION``/separator events edk2 logs around ExitBootServices.
  edk2 >= 202505 (every TDVF Debian ships: ``ovmf-inteltdx`` 2026.08) loads the kernel
  through its EFI stub and measures the file as it is; older TDVFs measured a copy whose
  setup header QEMU had patched, which this module does not reproduce (docs/adr/0035).
* **RTMR2** (OS): the kernel command line as UTF-16LE with the `` initrd=initrd`` suffix OVMF
  appends when an initrd is given and a terminating NUL character, then the initrd's SHA-384.

Each RTMR starts at 48 zero bytes; an event extends it as ``SHA-384(RTMR || digest)``.

What it does not compute: RTMR0 (firmware configuration: TD HOB, ACPI tables QEMU generates for
the exact VM shape, EFI variables): a policy pins it per platform from a reference TD, see
docs/adr/0035. RTMR3 is zero at boot.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass

from arca.wire.errors import InvalidInput

PAGE = 0x1000
CHUNK = 0x100  # TDH.MR.EXTEND granularity
#: OVMF's GUIDed footer table ends 32 bytes before the end of the image.
FOOTER_GUID = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d")
TDX_METADATA_GUID = uuid.UUID("e47a6535-984a-4798-865e-4685a7bf8ec2")
ATTR_MR_EXTEND, ATTR_PAGE_AUG = 0x1, 0x2
SECTION_TYPES = ("BFV", "CFV", "TD_HOB", "TempMem", "PermMem", "Payload", "PayloadParam",
                 "TD_INFO", "TD_PARAMS")
#: A TDVF is a few MiB; a section list longer than this is not a TDVF (DoS bound).
MAX_SECTIONS = 64
ZERO = bytes(48)


@dataclass(frozen=True)
class Section:
    data_offset: int
    raw_size: int
    gpa: int
    mem_size: int
    kind: int
    attributes: int


def _footer_entry(fw: bytes, guid: uuid.UUID, what: str) -> bytes:
    """The payload of one entry of OVMF's GUIDed footer table (walked from its end)."""
    end = len(fw) - 32
    if end < 18 or fw[end - 16:end] != FOOTER_GUID.bytes_le:
        raise InvalidInput(f"{what}: no OVMF footer table (not an OVMF/TDVF image)")
    table_len = struct.unpack_from("<H", fw, end - 18)[0]
    if not 18 <= table_len <= end:
        raise InvalidInput(f"{what}: corrupt OVMF footer table")
    start, pos = end - table_len, end - 18
    while pos - 18 >= start:
        size = struct.unpack_from("<H", fw, pos - 18)[0]
        if size < 18 or pos - size < start:
            raise InvalidInput(f"{what}: corrupt OVMF footer table entry")
        if fw[pos - 16:pos] == guid.bytes_le:
            return fw[pos - size:pos - 18]  # entry = data, u16 size, GUID
        pos -= size
    raise InvalidInput(f"{what}: the firmware has no TDX metadata (not a TDVF build; use "
                       "OVMF.inteltdx.fd from the ovmf-inteltdx package)")


def tdvf_sections(fw: bytes, what: str = "firmware") -> list[Section]:
    """The TDVF metadata sections (TDVF design guide, "TDVF Metadata")."""
    try:
        return _sections(fw, what)
    except struct.error:
        raise InvalidInput(f"{what}: truncated TDVF metadata") from None


def _sections(fw: bytes, what: str) -> list[Section]:
    entry = _footer_entry(fw, TDX_METADATA_GUID, what)
    if len(entry) < 4:
        raise InvalidInput(f"{what}: corrupt TDX metadata pointer")
    off = len(fw) - struct.unpack_from("<I", entry, len(entry) - 4)[0]
    if not 0 <= off <= len(fw) - 16 or fw[off:off + 4] != b"TDVF":
        raise InvalidInput(f"{what}: TDX metadata pointer does not point at a TDVF descriptor")
    _, version, count = struct.unpack_from("<III", fw, off + 4)
    if version != 1 or not 0 < count <= MAX_SECTIONS or off + 16 + 32 * count > len(fw):
        raise InvalidInput(f"{what}: unsupported TDVF descriptor (version {version}, "
                           f"{count} sections)")
    out = []
    for i in range(count):
        s = Section(*struct.unpack_from("<IIQQII", fw, off + 16 + 32 * i))
        if (s.gpa % PAGE or s.mem_size % PAGE or s.raw_size > s.mem_size
                or s.data_offset + s.raw_size > len(fw)
                or (s.attributes & ATTR_MR_EXTEND and s.raw_size != s.mem_size)):
            raise InvalidInput(f"{what}: TDVF section {i} is malformed")
        out.append(s)
    return out


def mrtd(fw: bytes, what: str = "firmware") -> bytes:
    """MRTD of a TD built from this TDVF by QEMU (single pass, see the module docstring)."""
    h = hashlib.sha384()
    for s in tdvf_sections(fw, what):
        for page in range(s.mem_size // PAGE):
            gpa = s.gpa + page * PAGE
            if not s.attributes & ATTR_PAGE_AUG:
                h.update(b"MEM.PAGE.ADD".ljust(16, b"\0") + struct.pack("<Q", gpa) + bytes(104))
            if s.attributes & ATTR_MR_EXTEND:
                base = s.data_offset + page * PAGE
                for c in range(0, PAGE, CHUNK):
                    h.update(b"MR.EXTEND".ljust(16, b"\0") + struct.pack("<Q", gpa + c)
                             + bytes(104))
                    h.update(fw[base + c:base + c + CHUNK])
    return h.digest()


def extend(events: list[bytes]) -> bytes:
    """Replay an RTMR's event digests from its reset value."""
    rtmr = ZERO
    for digest in events:
        rtmr = hashlib.sha384(rtmr + digest).digest()
    return rtmr


def _sha384(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


def authenticode(pe: bytes, algorithm: str = "sha384", what: str = "kernel") -> bytes:
    """PE/COFF Authenticode digest as edk2's measured boot computes it (Microsoft PE/COFF
    specification, "Calculating the PE Image Hash"; edk2 ``Tcg2MeasurePeImage``): the headers
    without the checksum and the certificate-table directory entry, the sections in file
    order, then any data after them except the certificate table."""
    try:
        pe_off = struct.unpack_from("<I", pe, 0x3C)[0]
        if pe[:2] != b"MZ" or pe[pe_off:pe_off + 4] != b"PE\0\0":
            raise InvalidInput(f"{what}: not a PE/COFF image (a bzImage with an EFI stub)")
        nsections, _, _, _, opt_size = struct.unpack_from("<HIIIH", pe, pe_off + 6)
        opt = pe_off + 24
        magic = struct.unpack_from("<H", pe, opt)[0]
        if magic not in (0x10B, 0x20B):
            raise InvalidInput(f"{what}: unknown PE optional header magic {magic:#x}")
        dirs = opt + (112 if magic == 0x20B else 96)
        ndirs = struct.unpack_from("<I", pe, dirs - 4)[0]
        cert_entry = dirs + 4 * 8  # IMAGE_DIRECTORY_ENTRY_SECURITY
        size_of_headers = struct.unpack_from("<I", pe, opt + 60)[0]
        checksum = opt + 64
        h = hashlib.new(algorithm)
        if ndirs > 4:
            h.update(pe[:checksum] + pe[checksum + 4:cert_entry]
                     + pe[cert_entry + 8:size_of_headers])
            cert_size = struct.unpack_from("<I", pe, cert_entry + 4)[0]
        else:
            h.update(pe[:checksum] + pe[checksum + 4:size_of_headers])
            cert_size = 0
        sections = []
        for i in range(nsections):
            raw_size, raw_ptr = struct.unpack_from("<II", pe, opt + opt_size + 40 * i + 16)
            if raw_size:
                sections.append((raw_ptr, raw_size))
        hashed = size_of_headers
        for ptr, size in sorted(sections):
            if ptr + size > len(pe):
                raise InvalidInput(f"{what}: PE section beyond the end of the file")
            h.update(pe[ptr:ptr + size])
            hashed += size
    except struct.error:
        raise InvalidInput(f"{what}: truncated PE/COFF image") from None
    if len(pe) > hashed + cert_size:
        h.update(pe[hashed:len(pe) - cert_size])
    return h.digest()


#: RTMR1 after the kernel's digest: edk2's EV_EFI_ACTION strings and the separator.
RTMR1_TAIL = (b"Calling EFI Application from Boot Option", b"\0\0\0\0",
              b"Exit Boot Services Invocation", b"Exit Boot Services Returned with Success")


def rtmr1(kernel: bytes) -> bytes:
    return extend([authenticode(kernel), *map(_sha384, RTMR1_TAIL)])


def cmdline_event(cmdline: str, has_initrd: bool) -> bytes:
    """What OVMF measures for the command line QEMU passes with ``-append``."""
    text = cmdline + (" initrd=initrd" if has_initrd else "")
    return (text + "\0").encode("utf-16-le")


def rtmr2(cmdline: str, initrd: bytes | None) -> bytes:
    events = [_sha384(cmdline_event(cmdline, initrd is not None))]
    if initrd is not None:
        events.append(_sha384(initrd))
    return extend(events)
