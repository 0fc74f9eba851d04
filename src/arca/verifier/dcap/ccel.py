"""TDX CC event log (CCEL) replay: the boot events a TD's firmware logged, checked against the
RTMRs of its verified quote, so a policy may rely on the events (which kernel, which command
line) and not only on the four opaque register values.

What it does:

1. Parse the log (:func:`parse`): the TCG2 crypto-agile format of the TCG PC Client Platform
   Firmware Profile (PFP) 1.06 section 10.2. The first event is a ``TCG_PCR_EVENT`` (SHA-1
   format, section 10.2.1) whose data is the ``TCG_EfiSpecIDEvent`` (section 10.4.5.1): the
   digest algorithms of the log and their sizes. Every later event is a ``TCG_PCR_EVENT2``
   (section 10.2.2): MR index (u32), event type (u32), ``TPML_DIGEST_VALUES`` (count u32, then
   ``{algorithm u16, digest}``), event size (u32), event data. The ACPI CCEL area the firmware
   reserved is padded after the last event: eight bytes of ``0xFF`` or of ``0x00`` where an
   event would start end the log (as Trustee's ``deps/eventlog`` decides). Real logs are
   untidier than the spec in two ways, both accepted without weakening the replay: event types
   no spec lists (only ``EV_NO_ACTION`` changes the replay, so the type of any other event is
   not judged; Trustee refuses unknown types), and a Spec ID event whose signature and header
   are zero: the header guest-components' attester writes when the TD has no CCEL and it sends
   the AA's events alone (``attester/src/utils.rs`` ``EL_HEADER``). The algorithm sizes are
   still read from it and SHA-384 still required.
2. Replay (:func:`replay`): UEFI 2.11 section 38.4.1 maps the CC MR index of an event to a TDX
   register: 1..4 are RTMR0..3 (0 is MRTD, which the log never extends). Each RTMR starts at 48
   zero bytes and becomes ``SHA-384(RTMR || digest)`` for each event of its index, in log
   order; ``EV_NO_ACTION`` events are informational and never extended (PFP section 10.4.5).
3. Check (:func:`check`): the replayed RTMRs equal the quote's, all four, or the evidence is
   refused naming the first register that differs (Trustee: ``replay_and_match``).
4. Runtime events (:mod:`arca.verifier.dcap.aael`): the attestation agent's entries, either
   ``EV_EVENT_TAG`` events of this log (replayed with the rest) or the legacy text log
   ``aa_eventlog``, replayed into RTMR3 from the value this log gives it.

What it does not do: verify the quote (the caller passes claims of a verified one) or judge
the events (that is the attestation policy's, on the claims :func:`claims` returns).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Any

from arca.errors import BindingMismatch, MalformedEvidence
from arca.verifier.dcap import aael

#: TCG algorithm IDs (TCG Algorithm Registry) whose digest sizes the log must declare.
SHA384 = 0x000C
EV_NO_ACTION = 0x3
#: CC MR index of RTMR0 (UEFI 2.11 section 38.4.1); RTMR i is index i + 1.
RTMR_BASE_INDEX = 1
RTMR_COUNT = 4
#: The TCG_EfiSpecIDEvent signature of a crypto-agile log (PFP section 10.4.5.1).
SPEC_ID_SIGNATURE = b"Spec ID Event03\0"
#: Signature and header of the Spec ID event guest-components writes ahead of the AA's events
#: when there is no CCEL (``attester/src/utils.rs`` ``EL_HEADER``): all zero.
ZERO_SPEC_ID_HEADER = bytes(24)
#: Denial-of-service bounds: a real TD logs tens of events, each of at most a few KiB (EFI
#: variables); the log itself is bounded by the broker's evidence size limit.
MAX_EVENTS = 4096
MAX_ALGORITHMS = 16
#: Event-data prefixes naming the kernel, as Trustee's claims read them: TDVF's
#: ``EV_EFI_...`` description (UTF-16 "kernel") and td-shim's ``UEFI_PLATFORM_FIRMWARE_BLOB2``
#: description "td_payload" (length-prefixed).
KERNEL_PREFIXES = ("kernel".encode("utf-16-le"), b"\x0btd_payload\0")


@dataclass(frozen=True)
class Event:
    """One ``TCG_PCR_EVENT2``: its CC MR index, type, SHA-384 digest and data."""

    index: int
    type: int
    sha384: bytes
    data: bytes


def _bad(detail: str) -> MalformedEvidence:
    return MalformedEvidence(f"tdx event log: {detail}", tee="tdx", field="cc_eventlog")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _bad(f"truncated in {what} at offset {self.pos}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u16(self, what: str) -> int:
        return int(struct.unpack("<H", self.take(2, what))[0])

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])


def _digest_sizes(spec_id: bytes) -> dict[int, int]:
    """Algorithm -> digest size from the TCG_EfiSpecIDEvent (PFP table 20)."""
    r = _Reader(spec_id)
    signature = r.take(16, "the Spec ID event signature")
    if signature not in (SPEC_ID_SIGNATURE, ZERO_SPEC_ID_HEADER[:16]):
        raise _bad("the first event is not a crypto-agile Spec ID event (Spec ID Event03)")
    header = r.take(8, "the Spec ID event header")  # platformClass, version, errata, uintnSize
    if signature != SPEC_ID_SIGNATURE and header != ZERO_SPEC_ID_HEADER[16:]:
        raise _bad("the first event is not a crypto-agile Spec ID event (a zero signature "
                   "with a non-zero header)")
    count = r.u32("the algorithm count")
    if not 0 < count <= MAX_ALGORITHMS:
        raise _bad(f"the Spec ID event lists {count} algorithms")
    sizes = {}
    for _ in range(count):
        alg, size = r.u16("an algorithm id"), r.u16("a digest size")
        sizes[alg] = size
    if sizes.get(SHA384) != 48:
        raise _bad("the log does not carry SHA-384 digests (the TDX RTMR algorithm)")
    r.take(r.take(1, "the vendor info size")[0], "the vendor info")
    if r.pos != len(spec_id):
        raise _bad("the Spec ID event has trailing bytes")
    return sizes


def parse(log: bytes) -> list[Event]:
    """The events after the Spec ID event; :class:`MalformedEvidence` if the log is not one."""
    r = _Reader(log)
    r.u32("the first event's MR index")
    first_type = r.u32("the first event's type")
    r.take(20, "the first event's SHA-1 digest")
    sizes = _digest_sizes(r.take(r.u32("the first event size"), "the Spec ID event"))
    if first_type != EV_NO_ACTION:
        raise _bad("the first event is not the EV_NO_ACTION Spec ID event")
    events: list[Event] = []
    while r.pos < len(log):
        if log[r.pos:r.pos + 8] in (b"\xff" * 8, bytes(8)):
            break  # the padding of the CCEL area
        if len(events) == MAX_EVENTS:
            raise _bad(f"more than {MAX_EVENTS} events")
        index, kind = r.u32("an MR index"), r.u32("an event type")
        digests: dict[int, bytes] = {}
        for _ in range(r.u32("a digest count")):
            alg = r.u16("a digest algorithm")
            if alg not in sizes or alg in digests:
                raise _bad(f"event {len(events) + 1} has an undeclared or repeated digest "
                           f"algorithm {alg:#06x}")
            digests[alg] = r.take(sizes[alg], "a digest")
        if SHA384 not in digests and kind != EV_NO_ACTION:  # never extended: none needed
            raise _bad(f"event {len(events) + 1} has no SHA-384 digest")
        data = r.take(r.u32("an event size"), "event data")
        events.append(Event(index, kind, digests.get(SHA384, bytes(48)), data))
    return events


def replay(events: list[Event]) -> list[bytes]:
    """RTMR0..3 as the events extend them (steps in the module docstring)."""
    rtmrs = [bytes(48)] * RTMR_COUNT
    for e in events:
        if e.type == EV_NO_ACTION:
            continue
        i = e.index - RTMR_BASE_INDEX
        if not 0 <= i < RTMR_COUNT:
            raise _bad(f"an event extends CC MR index {e.index}, which is no RTMR")
        rtmrs[i] = hashlib.sha384(rtmrs[i] + e.sha384).digest()
    return rtmrs


def check(events: list[Event], quote_rtmrs: list[bytes], aa_log: str | None = None,
          *, registers: range = range(RTMR_COUNT)) -> list[aael.AaEvent]:
    """Refuse unless the replayed RTMRs are the quote's (its claims ``rtmr0``..``rtmr3``), RTMR3
    continued by the legacy AA text log ``aa_log`` if there is one; return that log's entries."""
    replayed = replay(events)
    legacy: list[aael.AaEvent] = []
    if aa_log is not None:
        replayed[3], legacy = aael.replay_text(aa_log, replayed[3])
    for i in registers:
        got, want = replayed[i], quote_rtmrs[i]
        if not hmac.compare_digest(got, want):
            raise BindingMismatch(
                f"tdx event log does not replay to the quote's RTMR{i} (the log was changed, "
                "or is another TD's)", tee="tdx", field=f"rtmr{i}", expected=want.hex(),
                actual=got.hex())
    return legacy


def claims(events: list[Event], legacy: list[aael.AaEvent] | None = None) -> dict[str, Any]:
    """What a policy may read of a checked log, as Trustee's ``ccel`` claims where cheap:
    ``kernel`` (the digest of the kernel's event, if the firmware logged one), the number
    of events and ``aael``, the attestation agent's runtime entries (a list of ``{rtmr,
    domain, operation, content}``, absent without any). Not the firmware's events themselves:
    the claims travel in the attestation token, sent back in every resource request's head (a
    grub boot logs hundreds of events)."""
    out: dict[str, Any] = {"events": len(events)}
    kernel = next((e for e in events if e.data.startswith(KERNEL_PREFIXES)), None)
    if kernel is not None:
        out["kernel"] = kernel.sha384.hex()
    runtime: list[aael.AaEvent] = []
    for n, e in enumerate(events, start=1):
        if e.type == aael.EV_EVENT_TAG:  # firmware tags events too: from_tagged skips those
            entry = aael.from_tagged(n, e.index - RTMR_BASE_INDEX, e.data, e.sha384)
            runtime += [entry] if entry is not None else []
    runtime += legacy or []
    if runtime:
        out["aael"] = aael.claims(runtime)
    return out


def verify(log: bytes | None, rtmr_claims: dict[str, Any], aa_log: str | None = None
           ) -> dict[str, Any]:
    """Parse, replay and check ``log`` (and the legacy AA text log ``aa_log``) against verified
    claims ``rtmr0``..``rtmr3`` (hex); return the ``ccel`` claims. Without ``log`` only RTMR3 is
    checked, replayed by ``aa_log`` from zero (legacy Trustee did the same)."""
    try:
        quote = [bytes.fromhex(rtmr_claims[f"rtmr{i}"]) for i in range(RTMR_COUNT)]
    except (KeyError, TypeError, ValueError):
        raise _bad("the verified claims carry no RTMRs to replay against") from None
    events = parse(log) if log is not None else []
    legacy = check(events, quote, aa_log, registers=range(RTMR_COUNT) if log is not None
                   else range(RTMR_COUNT - 1, RTMR_COUNT))
    return claims(events, legacy)
