"""TDX event log (CCEL) replay (:mod:`arca.verifier.dcap.ccel`): a real TD's log replays to the
RTMRs google/go-eventlog publishes for it (and its quote carries, ../shared/vectors/dev
tdx-gotdxguest-1); constructed logs: matching is accepted, one changed event, digest or order
is refused naming the register, truncated or garbage logs are refused with one line."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.errors import BindingMismatch, MalformedEvidence
from arca.verifier.dcap import ccel
from tests.support.tee_fixtures import GO_EVENTLOG, fixture

CCEL_DIR = GO_EVENTLOG / "testdata/eventlogs/ccel"
#: cos-113-intel-tdx.bin (go-eventlog 0.0.2, Debian's golang-github-google-go-eventlog-dev) and
#: the RTMR0..2 its ccel/replay_test.go expects; RTMR3 is unused (zero), as in the TD's quote.
COS_SHA256 = "090dc18758380a5cc03014bf2fe354788a4f4222671e1e38f85b772d2fd344b5"
COS_RTMRS = [bytes.fromhex(h) for h in (
    "3fa2f61f395b7f5feefb4ec2df61297f109ad8abcd6410c1b7df60f21f37b19297fc35e544039c7e1edece752afd17f6",
    "f62dbc072bd5d3f3438b7b35c39a727f5aea2ffc2473f43723953f530daf62504f0a7944aa62c41a86e8a878c2b122c1",
    "4969684dc87381fc3b3134176c8d8806eaf0a901859f5f70cfae8d17714b46c10a8de219048c9fc09f11f381a6fbe7c1",
)] + [bytes(48)]
SHA256, SHA384 = 0x000B, 0x000C
EV_SEPARATOR, EV_NO_ACTION, EV_EFI_ACTION = 0x4, 0x3, 0x80000007


def spec_id(algs: tuple[tuple[int, int], ...] = ((SHA256, 32), (SHA384, 48))) -> bytes:
    """The SHA-1-format first event carrying a TCG_EfiSpecIDEvent (PFP 10.4.5.1)."""
    body = (ccel.SPEC_ID_SIGNATURE + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(algs))
            + b"".join(struct.pack("<HH", a, s) for a, s in algs) + b"\0")
    return struct.pack("<II", 0, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(body)) + body


def event(index: int, data: bytes, kind: int = EV_EFI_ACTION, sha384: bytes | None = None,
          algs: tuple[int, ...] = (SHA256, SHA384)) -> bytes:
    """A TCG_PCR_EVENT2 whose digests are of ``data`` (unless ``sha384`` says otherwise)."""
    digests = b"".join(
        struct.pack("<H", a) + (hashlib.sha256(data).digest() if a == SHA256 else
                                sha384 if sha384 is not None else hashlib.sha384(data).digest())
        for a in algs)
    return struct.pack("<III", index, kind, len(algs)) + digests + struct.pack(
        "<I", len(data)) + data


EVENTS = [(1, b"firmware"), (1, b"kernel".decode().encode("utf-16-le") + b"\0\0"),
          (2, b"boot loader"), (3, b"command line"), (1, b"separator")]


def log_and_rtmrs(events: list[tuple[int, bytes]] = EVENTS) -> tuple[bytes, list[bytes]]:
    rtmrs = [bytes(48)] * 4
    for index, data in events:
        rtmrs[index - 1] = hashlib.sha384(rtmrs[index - 1] + hashlib.sha384(data).digest()
                                          ).digest()
    return spec_id() + b"".join(event(i, d) for i, d in events), rtmrs


def claims_of(rtmrs: list[bytes]) -> dict[str, str]:
    return {f"rtmr{i}": r.hex() for i, r in enumerate(rtmrs)}


def test_a_real_td_log_replays_to_its_published_rtmrs() -> None:
    log = fixture(CCEL_DIR / "cos-113-intel-tdx.bin", COS_SHA256).read_bytes()
    events = ccel.parse(log)
    assert len(events) == 43 and ccel.replay(events) == COS_RTMRS
    assert ccel.verify(log, claims_of(COS_RTMRS)) == {"events": 43}


def test_the_real_log_with_a_duplicated_separator_is_refused() -> None:
    """go-eventlog's variant of the same log with one EV_SEPARATOR logged twice."""
    log = fixture(CCEL_DIR / "cos-113-intel-tdx-dupe-separator.bin").read_bytes()
    with pytest.raises(BindingMismatch, match="RTMR0") as info:
        ccel.verify(log, claims_of(COS_RTMRS))
    assert info.value.fields["field"] == "rtmr0"


#: go-eventlog ``ccel/cceventlog_test.go`` ``COS113TDXPadded``/``COS113TDXUnpadded``: the RTMRs
#: the log with the duplicated separator replays to (RTMR2 is the real log's).
DUPE_RTMRS = [bytes.fromhex(h) for h in (
    "a4de2df23e9611299123ba4359c42a5e578b0f8488bf1bba8ef5606d9ea5d81c97c064b482a5eac537d166bd0f0f752d",
    "0ee9366c928a77092f55e9e114c7394181fd264699155f0df77d23577618d5f650568a17d379355a07bd846e552f4e20",
)] + COS_RTMRS[2:]


@pytest.mark.parametrize("name", ["cos-113-intel-tdx-dupe-separator.bin",
                                  "cos-113-intel-tdx-dupe-separator-unpadded.bin"])
def test_real_logs_padded_or_not_replay_to_go_eventlogs_values(name: str) -> None:
    """The CCEL area as the firmware reserved it (padded with 0xFF to 256 KiB) and the same log
    cut at its last event replay alike, to the values go-eventlog's tests state."""
    events = ccel.parse(fixture(CCEL_DIR / name).read_bytes())
    assert len(events) == 43 and ccel.replay(events) == DUPE_RTMRS
    # real firmware logs carry vendor event types (0x800000e0: not in PFP 1.06's table)
    assert {e.type for e in events} >= {0x800000E0, 0xD, EV_SEPARATOR}


def test_no_action_events_without_digests_are_accepted_and_never_extended() -> None:
    """PFP 10.4.5: EV_NO_ACTION events (StartupLocality, a repeated Spec ID) are informational;
    a firmware may log them at MR index 0 and with no SHA-384 digest."""
    log, rtmrs = log_and_rtmrs()
    locality = struct.pack("<IIIH", 0, EV_NO_ACTION, 1, SHA256) + bytes(32) + struct.pack(
        "<I", 17) + b"StartupLocality\0\3"
    no_digest = struct.pack("<III", 1, EV_NO_ACTION, 0) + struct.pack("<I", 4) + b"info"
    assert ccel.verify(log + locality + no_digest, claims_of(rtmrs))["events"] == 7
    with pytest.raises(MalformedEvidence, match="no SHA-384"):  # an extending event needs one
        ccel.verify(log + struct.pack("<IIII", 1, EV_SEPARATOR, 0, 0), claims_of(rtmrs))


def test_a_constructed_log_replays_and_names_the_kernel() -> None:
    log, rtmrs = log_and_rtmrs()
    assert ccel.verify(log, claims_of(rtmrs)) == {
        "events": 5, "kernel": hashlib.sha384(EVENTS[1][1]).hexdigest()}
    # the CCEL area's padding ends the log (0xFF or zeros), whatever follows
    for pad in (b"\xff" * 64, bytes(64), bytes(8) + b"junk"):
        assert ccel.verify(log + pad, claims_of(rtmrs))["events"] == 5


@pytest.mark.parametrize("change", ["data+digest", "digest", "index", "order", "dropped",
                                    "added"])
def test_one_changed_event_is_refused_naming_the_register(change: str) -> None:
    _, rtmrs = log_and_rtmrs()
    events = list(EVENTS)
    if change == "data+digest":  # a consistent event, but not the one the TD measured
        events[2] = (2, b"another boot loader")
        log = log_and_rtmrs(events)[0]
    elif change == "digest":
        log = spec_id() + b"".join(
            event(i, d, sha384=bytes(48) if n == 3 else None) for n, (i, d) in enumerate(events))
    else:
        if change == "index":
            events[3] = (4, events[3][1])
        elif change == "order":
            events[0], events[1] = events[1], events[0]
        elif change == "dropped":
            del events[4]
        else:
            events.append((3, b"more"))
        log = log_and_rtmrs(events)[0]
    with pytest.raises(BindingMismatch, match=r"^tdx event log does not replay to "
                                              r"the quote's RTMR[0-3] ") as info:
        ccel.verify(log, claims_of(rtmrs))
    assert "\n" not in str(info.value)


def test_no_action_events_are_logged_not_extended() -> None:
    log, rtmrs = log_and_rtmrs()
    noted = log + event(1, b"informational", kind=EV_NO_ACTION)
    assert ccel.verify(noted, claims_of(rtmrs))["events"] == 6


@pytest.mark.parametrize(("log", "why"), [
    (b"", "truncated"),
    (b"\0" * 31, "truncated"),
    (bytes(32), "truncated"),  # a first event without its Spec ID data
    (spec_id()[:-1], "truncated"),
    (struct.pack("<II", 0, 3) + bytes(20) + struct.pack("<I", 16) + b"Spec ID Event00\0",
     "crypto-agile"),
    (spec_id(((SHA256, 32),)), "SHA-384"),
    (spec_id(((SHA384, 32),)), "SHA-384"),
    (spec_id() + event(1, b"x", algs=(SHA256,)), "no SHA-384"),
    (spec_id() + event(1, b"x", algs=(SHA384, SHA384)), "repeated"),
    (spec_id() + event(1, b"x", algs=(0x0004,)), "undeclared"),
    (spec_id() + event(5, b"x"), "no RTMR"),
    (spec_id() + event(0, b"x"), "no RTMR"),
    (spec_id() + event(1, b"x")[:-1], "truncated"),
    (spec_id() + struct.pack("<III", 1, 4, 2**32 - 1), "truncated"),
])
def test_malformed_logs_are_refused_with_one_line(log: bytes, why: str) -> None:
    with pytest.raises(MalformedEvidence, match=f"^tdx event log: .*{why}") as e:
        ccel.verify(log, claims_of([bytes(48)] * 4))
    assert "\n" not in str(e.value)


def test_every_truncation_of_a_good_log_is_refused_or_shorter() -> None:
    """Cut anywhere: refused as malformed, or (cut at an event boundary) a shorter log that no
    longer replays to the RTMRs; never accepted."""
    log, rtmrs = log_and_rtmrs()
    for cut in range(len(log)):
        with pytest.raises((MalformedEvidence, BindingMismatch)):
            ccel.verify(log[:cut], claims_of(rtmrs))


def test_claims_without_rtmrs_are_refused() -> None:
    with pytest.raises(MalformedEvidence, match="no RTMRs"):
        ccel.verify(log_and_rtmrs()[0], {"rtmr0": "00"})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.builds(lambda b: spec_id() + b, st.binary(max_size=200)))
def test_garbage_is_only_ever_malformed_or_mismatched(data: bytes) -> None:
    try:
        ccel.verify(data, claims_of(log_and_rtmrs()[1]))
    except (MalformedEvidence, BindingMismatch):
        return
    raise AssertionError("garbage accepted")
