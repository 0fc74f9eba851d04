"""TDX reference values (MRTD, RTMR1, RTMR2): known answers published by other projects where
such exist, the research file's values for Debian's TDVF, determinism, bad input."""

from __future__ import annotations

import hashlib
import struct

import pytest

from arca.host.backends.tdx import measure
from arca.wire.errors import InvalidInput
from tests.support.tee_fixtures import GO_EVENTLOG, SHIM, TDVF, fixture

#: Source: google/go-eventlog 0.0.2 as packaged by Debian (golang-github-google-go-eventlog-dev
#: 0.0.2-2): testdata/eventlogs/ccel/cos-113-intel-tdx.bin, the CCEL event log of a real TD,
#: and the RTMR0..2 that ccel/replay_test.go TestReplayAndExtract expects it to replay to
#: (there as Go byte-string literals; here in hex).
CCEL_SHA256 = "090dc18758380a5cc03014bf2fe354788a4f4222671e1e38f85b772d2fd344b5"
CCEL_RTMRS = [
    "3fa2f61f395b7f5feefb4ec2df61297f109ad8abcd6410c1b7df60f21f37b192"
    "97fc35e544039c7e1edece752afd17f6",
    "f62dbc072bd5d3f3438b7b35c39a727f5aea2ffc2473f43723953f530daf6250"
    "4f0a7944aa62c41a86e8a878c2b122c1",
    "4969684dc87381fc3b3134176c8d8806eaf0a901859f5f70cfae8d17714b46c1"
    "0a8de219048c9fc09f11f381a6fbe7c1",
]
EV_SEPARATOR, EV_EFI_ACTION = 0x4, 0x80000007
#: Debian's TDVF (ovmf-inteltdx 2026.08+ds-2): its metadata sections and MRTD as recorded
#: in research/vm_backends.md §2.2 by an independent throw-away implementation (not a value
#: from a real TD: no public project publishes one for this firmware).
TDVF_SHA256 = "a265075b4147a096109e501e76196df1ec8a18659c26f7401492c597ec88f312"
TDVF_MRTD_PREFIX, TDVF_MRTD_SUFFIX = "a7a1f751", "3183bd08"


def ccel_events(log: bytes) -> list[tuple[int, int, bytes, bytes]]:
    """(CC MR index, event type, SHA-384 digest, event data) of a TCG2 crypto-agile log
    (TCG PC Client Platform Firmware Profile §10.2), after the SHA-1-format header event."""
    header_size = struct.unpack_from("<I", log, 28)[0]
    off, out = 32 + header_size, []
    sizes = {0x4: 20, 0xB: 32, 0xC: 48, 0xD: 64}
    while off + 12 <= len(log):
        index, kind, count = struct.unpack_from("<III", log, off)
        if kind in (0, 0xFFFFFFFF):
            break
        off += 12
        digest = b""
        for _ in range(count):
            alg = struct.unpack_from("<H", log, off)[0]
            if alg == 0xC:
                digest = log[off + 2:off + 2 + 48]
            off += 2 + sizes[alg]
        size = struct.unpack_from("<I", log, off)[0]
        out.append((index, kind, digest, log[off + 4:off + 4 + size]))
        off += 4 + size
    return out


def test_rtmr_replay_matches_go_eventlog_published_rtmrs():
    events = ccel_events(fixture(GO_EVENTLOG / "testdata/eventlogs/ccel/cos-113-intel-tdx.bin",
                                 CCEL_SHA256).read_bytes())
    for rtmr, expected in enumerate(CCEL_RTMRS):  # CC MR index 1..3 = RTMR0..2
        assert measure.extend([d for i, _, d, _ in events if i == rtmr + 1]).hex() == expected


def test_rtmr1_tail_events_are_edk2s_as_logged_in_a_real_td():
    events = ccel_events(fixture(GO_EVENTLOG / "testdata/eventlogs/ccel/cos-113-intel-tdx.bin",
                                 CCEL_SHA256).read_bytes())
    tail = [(data, digest) for i, kind, digest, data in events
            if i == 2 and kind in (EV_SEPARATOR, EV_EFI_ACTION)]
    assert [data for data, _ in tail] == list(measure.RTMR1_TAIL)
    assert all(digest == hashlib.sha384(data).digest() for data, digest in tail)


def test_authenticode_matches_the_digest_microsoft_signed_in_shim():
    """Source: Debian's shim-signed (shimx64.efi.signed): its Authenticode signature's
    SpcIndirectDataContent carries the SHA-256 Authenticode digest Microsoft signed."""
    pe = fixture(SHIM).read_bytes()
    spc = pe.index(bytes.fromhex("060a2b060104018237020104"))  # SPC_INDIRECT_DATA_OBJID
    digest_info = bytes.fromhex("060960864801650304020105000420")  # sha256, NULL, OCTET(32)
    at = pe.index(digest_info, spc) + len(digest_info)
    assert measure.authenticode(pe, "sha256") == pe[at:at + 32]
    assert len(measure.rtmr1(pe)) == 48


def test_mrtd_of_debians_tdvf():
    fw = fixture(TDVF, TDVF_SHA256).read_bytes()
    sections = measure.tdvf_sections(fw)
    kinds = [(measure.SECTION_TYPES[s.kind], s.gpa, s.mem_size, s.attributes)
             for s in sections]
    assert kinds == [("BFV", 0xFFC84000, 0x37C000, 1), ("CFV", 0xFFC00000, 0x84000, 0),
                     ("TempMem", 0x810000, 0x10000, 0), ("TempMem", 0x80B000, 0x2000, 0),
                     ("TD_HOB", 0x809000, 0x2000, 0), ("TempMem", 0x800000, 0x6000, 0)]
    value = measure.mrtd(fw).hex()
    assert value.startswith(TDVF_MRTD_PREFIX) and value.endswith(TDVF_MRTD_SUFFIX)
    assert measure.mrtd(fw).hex() == value  # deterministic
    patched = bytearray(fw)
    bfv = sections[0]
    patched[bfv.data_offset + 5] ^= 1  # a byte the TD measures
    assert measure.mrtd(bytes(patched)).hex() != value


def test_rtmr2_is_the_utf16_cmdline_with_ovmfs_initrd_suffix_then_the_initrd():
    event = measure.cmdline_event("console=hvc0", has_initrd=True)
    assert event == "console=hvc0 initrd=initrd\0".encode("utf-16-le")
    expected = measure.extend([hashlib.sha384(event).digest(), hashlib.sha384(b"ird").digest()])
    assert measure.rtmr2("console=hvc0", b"ird") == expected
    assert measure.rtmr2("console=hvc0", b"ird") != measure.rtmr2("console=hvc1", b"ird")
    assert measure.rtmr2("console=hvc0", None) == measure.extend(
        [hashlib.sha384("console=hvc0\0".encode("utf-16-le")).digest()])


@pytest.mark.parametrize(("data", "message"), [
    (b"", "no OVMF footer table"),
    (b"\x17" * 8192, "no OVMF footer table"),
])
def test_not_a_tdvf_is_one_line(data, message):
    with pytest.raises(InvalidInput, match=message) as e:
        measure.mrtd(data, "fw.fd")
    assert "\n" not in str(e.value)


def test_truncated_tdvf_is_refused_not_a_crash():
    fw = fixture(TDVF).read_bytes()
    table = fw[-(32 + 512):]  # the footer table without the sections it points to
    with pytest.raises(InvalidInput):
        measure.mrtd(table)


@pytest.mark.parametrize("pe", [b"", b"MZ" + b"\0" * 100, b"\x7fELF" + b"\0" * 1000])
def test_not_a_pe_kernel_is_one_line(pe):
    with pytest.raises(InvalidInput, match="kernel"):
        measure.rtmr1(pe)


def test_mutated_tdvf_metadata_is_refused_or_measured_never_a_crash():
    fw = bytearray(fixture(TDVF).read_bytes())
    for at in range(len(fw) - 600, len(fw), 7):  # the footer table and TDVF pointer
        mutated = bytearray(fw)
        mutated[at] ^= 0xFF
        try:
            measure.tdvf_sections(bytes(mutated))
        except InvalidInput:
            pass


def test_authenticode_of_the_guest_kernel_matches_debians_signature():
    """The guest's EFI-stub bzImage (Debian's signed cloud kernel, kept by setup.sh for
    tdx/snp): the Authenticode digest in Debian's signature equals ours, so RTMR1 hashes the
    image exactly as the firmware's PE loader sees it."""
    from arca.host.backends.vm import assets

    kernel = assets.data_dir() / "vmlinuz"
    if not kernel.is_file():
        pytest.skip(f"{kernel} absent: run scripts/setup.sh")
    pe = kernel.read_bytes()
    spc = pe.index(bytes.fromhex("060a2b060104018237020104"))
    digest_info = bytes.fromhex("060960864801650304020105000420")
    at = pe.index(digest_info, spc) + len(digest_info)
    assert measure.authenticode(pe, "sha256") == pe[at:at + 32]
