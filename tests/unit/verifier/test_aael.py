"""The attestation agent's runtime events (AAEL) replayed into RTMR3
(:mod:`arca.verifier.dcap.aael` through :func:`arca.verifier.dcap.ccel.verify`). Known answers
come from the rules and test values of the sources each test names; tampering (a flipped digest,
a changed entry, reordered, dropped, truncated, garbage) is refused with one line."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.errors import BindingMismatch, MalformedEvidence
from arca.verifier.dcap import aael, ccel
from tests.support.tee_fixtures import GO_EVENTLOG, fixture
from tests.unit.verifier.test_ccel import COS_RTMRS, COS_SHA256, EV_NO_ACTION, claims_of, event

SHA384, SM3 = 0x000C, 0x0012


def tagged(text: str) -> bytes:
    """TCG_PCClientTaggedEvent {id "AAEL", size, entry} (guest-components
    ``attestation-agent/src/eventlog/tcg2.rs`` ``TaggedEvent::to_le_bytes``)."""
    return struct.pack("<II", 0x4141454C, len(text.encode())) + text.encode()


def aa_event(text: str, ccmr: int = 4, data: bytes | None = None,
             sha384: bytes | None = None) -> bytes:
    """A TCG_PCR_EVENT2 as the AA writes one (``tcg2.rs`` ``Tcg2EventEntry``: type
    EV_EVENT_TAG, one SHA-384 digest of the tagged event data; CC MR 4 for PCR 17 per
    ``attester/src/tdx/mod.rs`` ``pcr_to_ccmr``)."""
    body = tagged(text) if data is None else data
    digest = hashlib.sha384(tagged(text)).digest() if sha384 is None else sha384
    return struct.pack("<IIIH", ccmr, 6, 1, SHA384) + digest + struct.pack("<I", len(body)) + body


def el_header() -> bytes:
    """guest-components ``attester/src/utils.rs`` ``EL_HEADER``: an EV_NO_ACTION first event
    whose Spec ID data is a zero signature and header, then SHA-384 (48) and SM3 (32) sizes."""
    spec = bytes(24) + struct.pack("<IHHHHB", 2, SHA384, 48, SM3, 32, 0)
    return struct.pack("<II", 0, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(spec)) + spec


def extend(rtmr: bytes, digest: bytes) -> bytes:
    return hashlib.sha384(rtmr + digest).digest()


ENTRIES = ["github.com/confidential-containers image-rs/pull docker.io/library/alpine:3.20",
           'kata-agent CreateContainer {"id":"c1","image":"alpine"}',
           "domain operation content with spaces"]


def rtmr3_of(entries: list[str], start: bytes = bytes(48)) -> bytes:
    for text in entries:
        start = extend(start, hashlib.sha384(tagged(text)).digest())
    return start


def aa_only_log(entries: list[str] = ENTRIES) -> bytes:
    """What ``read_eventlog`` (``attester/src/utils.rs``) sends from a TD without a CCEL: the
    header, the AA's events, then the 0xFF end flag."""
    return el_header() + b"".join(aa_event(t) for t in entries) + b"\xff" * 8


def test_event_digests_are_guest_components_known_answers() -> None:
    """``attestation-agent/src/eventlog/mod.rs`` ``test_event_digest`` (SHA-384 case): the
    tagged form's digest; the pre-TCG2 text form's (same file at guest-components 4619b4be)."""
    assert hashlib.sha384(tagged("domain operation content")).hexdigest() == (
        "dad5f0e226318ffa9839b75a472c6aa7fdb5834949d0a0a22990cf04d5692440fb00f3aa0609db7e49cd8d"
        "793f670d02")
    assert hashlib.sha384(b"domain operation content").hexdigest() == (
        "26d944cb8d99096590252283b8c807b9508329b068703bdb7bac7eb6efe5b32fc0fadf1462662b95d2c708"
        "aa49c0bfe1")
    # EL_HEADER: [u8; 69], byte for byte
    assert el_header() == bytes.fromhex("00000000" "03000000" + "00" * 20 + "25000000"
                                        + "00" * 24 + "02000000" "0c003000" "12002000" "00")


def test_digests_of_a_real_aa_on_a_real_platform() -> None:
    """Trustee ``deps/eventlog/test_data/CCEL_AAEL_alibabacloud_out.json``: the two AAEL events
    an AA logged in an Alibaba Cloud TD (CC MR index 4, ``digest_matches_event`` true), their
    text and SHA-384 digests; the tagged form here reproduces both, and the claim reads the
    second one's content as JSON, as Trustee's does."""
    known = {
        "coco.com some-operation some-content":
            "2330183d89750c6a374ac9827d33a33636e7876733544584c8ccc88df0df87eada37e5d71d0773502234"
            "c2b5fbc7448e",
        'coco.com some-operation {"key": "value", "nested-key": {"sub-key": "value"}}':
            "82b3e7dd09cbe55777a6eeed67614e9e5a25508ec1cd03ecbfbe10c913fa76ed451fbc275babc6a01a8e"
            "5c08e853419b"}
    for text, digest in known.items():
        assert hashlib.sha384(tagged(text)).hexdigest() == digest
    log = aa_only_log(list(known))
    got = ccel.verify(log, claims_of([bytes(48)] * 3 + [rtmr3_of(list(known))]))
    assert got["aael"][1]["content"] == {"key": "value", "nested-key": {"sub-key": "value"}}


def test_an_aa_log_without_a_ccel_replays_to_rtmr3_and_becomes_claims() -> None:
    rtmrs = [bytes(48)] * 3 + [rtmr3_of(ENTRIES)]
    got = ccel.verify(aa_only_log(), claims_of(rtmrs))
    assert got["events"] == 3 and got["aael"] == [
        {"rtmr": 3, "domain": "github.com/confidential-containers", "operation": "image-rs/pull",
         "content": "docker.io/library/alpine:3.20"},
        {"rtmr": 3, "domain": "kata-agent", "operation": "CreateContainer",
         "content": {"id": "c1", "image": "alpine"}},  # JSON content parsed, as Trustee's
        {"rtmr": 3, "domain": "domain", "operation": "operation",
         "content": "content with spaces"}]


def test_aa_events_appended_to_a_real_ccel_replay_with_it() -> None:
    """``read_eventlog``: the CCEL cut at its end flag, the AA's events, a new end flag. The
    real TD's RTMR0..2 (go-eventlog's cos-113-intel-tdx.bin) still replay, RTMR3 is the AA's."""
    ccel_area = fixture(GO_EVENTLOG / "testdata/eventlogs/ccel/cos-113-intel-tdx.bin",
                        COS_SHA256).read_bytes()
    end = ccel_area.index(b"\xff" * 8, 0x4000)  # after the 43 firmware events
    assert len(ccel.parse(ccel_area[:end])) == 43
    log = ccel_area[:end] + b"".join(aa_event(t) for t in ENTRIES) + b"\xff" * 8
    got = ccel.verify(log, claims_of(COS_RTMRS[:3] + [rtmr3_of(ENTRIES)]))
    assert got["events"] == 46 and [e["operation"] for e in got["aael"]] == [
        "image-rs/pull", "CreateContainer", "operation"]
    with pytest.raises(BindingMismatch, match="RTMR3"):  # the quote's RTMR3 is still zero
        ccel.verify(log, claims_of(COS_RTMRS))


def test_other_tagged_events_and_unknown_types_are_replayed_not_read() -> None:
    """Firmware tags events too (OVMF's LOADED_IMAGE::LoadOptions, Trustee ``event_tag.rs``
    tests), and real logs carry types no spec lists: both extend, neither becomes a claim."""
    other = struct.pack("<II", 0x8F3B22ED, 26) + b"LOADED_IMAGE::LoadOptions\0"
    log = el_header() + event(4, other, kind=6, algs=(SHA384,)) + event(
        4, b"vendor", kind=0xDEADBEEF, algs=(SHA384,)) + aa_event(ENTRIES[0])
    rtmr3 = extend(extend(bytes(48), hashlib.sha384(other).digest()),
                   hashlib.sha384(b"vendor").digest())
    got = ccel.verify(log, claims_of([bytes(48)] * 3 + [rtmr3_of(ENTRIES[:1], rtmr3)]))
    assert got["events"] == 3 and len(got["aael"]) == 1


@pytest.mark.parametrize("change", ["flipped digest", "changed entry", "reordered", "dropped",
                                    "added", "another register"])
def test_a_tampered_aa_log_does_not_replay(change: str) -> None:
    rtmrs = [bytes(48)] * 3 + [rtmr3_of(ENTRIES)]
    events = [aa_event(t) for t in ENTRIES]
    if change == "flipped digest":
        d = bytearray(hashlib.sha384(tagged(ENTRIES[1])).digest())
        d[0] ^= 1
        events[1] = aa_event(ENTRIES[1], sha384=bytes(d))
    elif change == "changed entry":  # consistent, but not what the AA extended
        events[1] = aa_event(ENTRIES[1].replace("c1", "c2"))
    elif change == "reordered":
        events[0], events[1] = events[1], events[0]
    elif change == "dropped":
        del events[2]
    elif change == "added":
        events.append(aa_event("kata-agent ExecProcess sh"))
    else:
        events[2] = aa_event(ENTRIES[2], ccmr=3)
    with pytest.raises(BindingMismatch, match=r"^tdx event log does not replay to the quote's "
                                              r"RTMR[23] ") as info:
        ccel.verify(el_header() + b"".join(events), claims_of(rtmrs))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("event_bytes", "why"), [
    # the text changed under its recorded digest: the replay passes, the claim would lie
    (aa_event(ENTRIES[0], data=tagged(ENTRIES[0].replace("3.20", "3.21"))), "not of its AAEL"),
    (aa_event("x", data=tagged("no-spaces")), "not of its AAEL"),
    (aa_event("", data=tagged("no-spaces"),
              sha384=hashlib.sha384(tagged("no-spaces")).digest()), "<domain> <operation>"),
    (aa_event("", data=tagged(" op content"),
              sha384=hashlib.sha384(tagged(" op content")).digest()), "<domain> <operation>"),
    (aa_event("", data=tagged("d\top content"),
              sha384=hashlib.sha384(tagged("d\top content")).digest()), "<domain> <operation>"),
    (aa_event("", data=tagged("d op line\nbreak"),
              sha384=hashlib.sha384(tagged("d op line\nbreak")).digest()), "line break"),
    (aa_event("", data=struct.pack("<II", 0x4141454C, 5) + b"\xff\xfe op",
              sha384=hashlib.sha384(struct.pack("<II", 0x4141454C, 5) + b"\xff\xfe op"
                                    ).digest()), "UTF-8"),
    (aa_event("", data=struct.pack("<II", 0x4141454C, 99) + b"d o c",
              sha384=hashlib.sha384(struct.pack("<II", 0x4141454C, 99) + b"d o c").digest()),
     "of 99 bytes"),
])
def test_a_malformed_aa_entry_is_refused(event_bytes: bytes, why: str) -> None:
    log = el_header() + event_bytes
    rtmr3 = ccel.replay(ccel.parse(log))[3]
    with pytest.raises(MalformedEvidence, match=f"^tdx AA event log: event 1.*{why}") as info:
        ccel.verify(log, claims_of([bytes(48)] * 3 + [rtmr3]))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("entries", [
    [f"d op {'x' * 1000} {i}" for i in range(40)],
    ["d op " + '"' * 17000],  # 17 KB of text, 34 KB once the token escapes it
    ["d op " + "é" * 6000],  # 12 KB of UTF-8, 36 KB as \u escapes
])
def test_aa_entries_beyond_what_a_token_carries_are_refused(entries: list[str]) -> None:
    log = aa_only_log(entries)
    with pytest.raises(MalformedEvidence, match="more than the 32768"):
        ccel.verify(log, claims_of([bytes(48)] * 3 + [rtmr3_of(entries)]))
    fewer = entries[:20] if len(entries) > 1 else [entries[0][:4000]]  # under the limit
    assert len(ccel.verify(aa_only_log(fewer), claims_of([bytes(48)] * 3 + [rtmr3_of(fewer)])
                           )["aael"]) == len(fewer)


def test_every_truncation_of_an_aa_log_is_refused() -> None:
    log, rtmrs = aa_only_log(), [bytes(48)] * 3 + [rtmr3_of(ENTRIES)]
    for cut in range(len(log) - 8):  # the last 8 bytes are the end flag
        with pytest.raises((MalformedEvidence, BindingMismatch)):
            ccel.verify(log[:cut], claims_of(rtmrs))


def test_the_zero_spec_id_header_is_the_only_relaxation() -> None:
    """A zero signature is accepted only with a zero header, and the sizes are still read."""
    bad_header = bytearray(el_header())
    bad_header[32 + 17] = 2  # a version byte after a zero signature
    no_sha384 = el_header().replace(struct.pack("<HH", SHA384, 48), struct.pack("<HH", 0xB, 32))
    not_no_action = bytearray(el_header())
    not_no_action[4] = 1
    for head, why in ((bytes(bad_header), "crypto-agile"), (no_sha384, "SHA-384"),
                      (bytes(not_no_action), "EV_NO_ACTION")):
        with pytest.raises(MalformedEvidence, match=why):
            ccel.verify(head + aa_event(ENTRIES[0]), claims_of([bytes(48)] * 4))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_after_the_aa_header_is_refused(data: bytes) -> None:
    try:
        ccel.verify(el_header() + data, claims_of([bytes(48)] * 3 + [rtmr3_of(ENTRIES)]))
    except (MalformedEvidence, BindingMismatch):
        return
    raise AssertionError("garbage accepted")


# -- the legacy text log (aa_eventlog) ------------------------------------------------------
INIT = "INIT sha384/" + "00" * 48


def legacy_rtmr3(lines: list[str], start: bytes = bytes(48)) -> bytes:
    """Trustee ``deps/verifier/src/eventlog/mod.rs`` (before 09080e2f) ``accumulate_hash``:
    from the INIT value, extend SHA-384 of the INIT line, then of each entry."""
    for line in lines:
        start = extend(start, hashlib.sha384(line.encode()).digest())
    return start


def test_a_legacy_aa_text_log_replays_to_rtmr3() -> None:
    lines = [INIT, "image-rs PullImage docker.io/library/alpine", "kata-agent Start c1"]
    text = "\n".join(lines) + "\n"
    log, rtmrs = None, [bytes(48)] * 3 + [legacy_rtmr3(lines)]
    got = ccel.verify(log, claims_of(rtmrs), text)
    assert got["aael"][0] == {"rtmr": 3, "domain": "image-rs", "operation": "PullImage",
                              "content": "docker.io/library/alpine"}
    # beside a CCEL whose RTMR3 is zero (the real TD's): RTMR0..2 from the CCEL, RTMR3 the AA's
    real = fixture(GO_EVENTLOG / "testdata/eventlogs/ccel/cos-113-intel-tdx.bin",
                   COS_SHA256).read_bytes()
    got = ccel.verify(real, claims_of(COS_RTMRS[:3] + [legacy_rtmr3(lines)]), text)
    assert got["events"] == 43 and len(got["aael"]) == 2


@pytest.mark.parametrize(("text", "why"), [
    ("", "first line"),
    ("image-rs PullImage x\n", "first line"),
    ("INIT sha256/" + "00" * 32 + "\n", "first line"),
    ("INIT sha384/" + "00" * 47 + "\n", "48 bytes"),
    ("INIT sha384/" + "AB" * 48 + "\n", "lowercase"),
    ("INIT sha384/" + "ab" * 48 + "\n", "accounts for"),  # RTMR3 extended before, unlogged
    (INIT + "\nimage-rs\n", "line 2"),
    (INIT + "\nimage-rs PullImage x\r\n", "line break"),
    (INIT + "\n\n", "line 2"),
])
def test_a_malformed_legacy_log_is_refused(text: str, why: str) -> None:
    with pytest.raises(MalformedEvidence, match=f"^tdx AA event log: .*{why}"):
        ccel.verify(None, claims_of([bytes(48)] * 4), text)


@pytest.mark.parametrize("change", ["changed", "reordered", "dropped"])
def test_a_tampered_legacy_log_does_not_replay(change: str) -> None:
    lines = [INIT, "a b 1", "a b 2", "a b 3"]
    rtmrs = [bytes(48)] * 3 + [legacy_rtmr3(lines)]
    sent = list(lines)
    if change == "changed":
        sent[2] = "a b 9"
    elif change == "reordered":
        sent[1], sent[2] = sent[2], sent[1]
    else:
        del sent[3]
    with pytest.raises(BindingMismatch, match="RTMR3"):
        ccel.verify(None, claims_of(rtmrs), "\n".join(sent))


def test_aael_module_constants_match_the_sources() -> None:
    assert struct.pack(">I", aael.AAEL_TAG) == b"AAEL" and aael.EV_EVENT_TAG == 6
