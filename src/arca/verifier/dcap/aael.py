"""Attestation Agent event log (AAEL): the runtime events CoCo's attestation agent (AA) extends
into RTMR3 after boot (image pulls, container starts, ...), so a policy may read them once they
are shown to be the ones that produced the quote's RTMR3.

An AAEL entry is one line of text, ``<domain> <operation> <content>`` (Trustee
``kbs/docs/confidential-containers-eventlog.md``): domain and operation without white space,
content without a line feed, fields split at the first two spaces (guest-components
``attestation-agent/src/eventlog/mod.rs`` ``Event::try_from``; Trustee
``deps/eventlog/src/ccel/event_tag.rs`` ``AaelEventEntry::from_bytes``). Two encodings exist:

1. **Current: TCG2 tagged events in the CC event log.** The AA writes each entry as a
   ``TCG_PCR_EVENT2`` of type ``EV_EVENT_TAG`` (6) whose data is a ``TCG_PCClientTaggedEvent``
   (PFP section 10.2.6: tag id u32, size u32, data) with tag id ``"AAEL"`` (0x4141454C) and the
   entry text as data; its one digest is the SHA-384 of that event data, and the CC MR index is
   4 (PCR 17, RTMR3) by default (guest-components ``eventlog/tcg2.rs`` and
   ``attester/src/tdx/mod.rs`` ``pcr_to_ccmr``). The attester appends these events to the
   firmware's CCEL in ``cc_eventlog`` (``attester/src/utils.rs`` ``read_eventlog``), so the
   CCEL replay (:mod:`arca.verifier.dcap.ccel`) covers them; :func:`from_tagged` reads one and
   refuses it unless its SHA-384 digest is of its own data (else the text a policy reads would
   not be what was extended; Trustee only flags that as ``digest_matches_event``).
2. **Legacy: a text log in ``aa_eventlog``** (Trustee 22141848..09080e2f, guest-components
   15d85b6e): a first line ``INIT sha384/<RTMR3 hex when the AA started>``, then one entry per
   line. Replay (Trustee ``deps/verifier/src/eventlog/mod.rs`` as it was): RTMR3 starts at the
   INIT value, is extended with ``SHA-384(INIT line)``, then with ``SHA-384(entry)`` per line.
   :func:`replay_text` requires the INIT value to be the RTMR3 the CC event log accounts for
   (zero without one), so nothing extended before the AA started goes unexplained.

What it does not do: judge the events (the policy's, on :func:`claim`).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

from arca.errors import MalformedEvidence

EV_EVENT_TAG = 0x6
#: ``TCG_PCClientTaggedEvent.taggedEventID`` of an AAEL entry: ASCII "AAEL".
AAEL_TAG = 0x4141454C
#: The claims travel in the attestation token (sent back in a request head of at most 64 KiB,
#: base64url: 4/3); entries beyond this many bytes of claim JSON are refused rather than cut (a
#: cut list would let a policy miss an event).
MAX_CLAIM_BYTES = 32 * 1024
INIT_PREFIX = "INIT sha384/"


@dataclass(frozen=True)
class AaEvent:
    """One AAEL entry and the RTMR its digest extended."""

    rtmr: int
    domain: str
    operation: str
    content: str

    def claim(self) -> dict[str, Any]:
        """As Trustee's claims show it: ``content`` parsed as JSON when it is JSON."""
        try:
            content: Any = json.loads(self.content)
        except (ValueError, RecursionError):
            content = self.content
        return {"rtmr": self.rtmr, "domain": self.domain, "operation": self.operation,
                "content": content}


def _bad(field: str, detail: str) -> MalformedEvidence:
    return MalformedEvidence(f"tdx AA event log: {detail}", tee="tdx", field=field)


def entry(text: str, rtmr: int, where: str, field: str) -> AaEvent:
    """``<domain> <operation> <content>`` split at the first two spaces."""
    domain, _, rest = text.partition(" ")
    operation, space, content = rest.partition(" ")
    if not space or not domain or not operation or any(c.isspace() for c in domain + operation):
        raise _bad(field, f"{where} is not '<domain> <operation> <content>'")
    if "\n" in content or "\r" in content:
        raise _bad(field, f"{where} has a line break in its content")
    return AaEvent(rtmr, domain, operation, content)


def from_tagged(n: int, rtmr: int, data: bytes, sha384: bytes) -> AaEvent | None:
    """Event ``n`` (``EV_EVENT_TAG`` data ``data``, extending ``rtmr`` by ``sha384``) as an
    AAEL entry; ``None`` if it is another tag (firmware tags events too)."""
    if len(data) < 8 or struct.unpack_from("<I", data)[0] != AAEL_TAG:
        return None
    size = struct.unpack_from("<I", data, 4)[0]
    if size != len(data) - 8:
        raise _bad("cc_eventlog", f"event {n} is an AAEL entry of {size} bytes in "
                                  f"{len(data) - 8}")
    if hashlib.sha384(data).digest() != sha384:
        raise _bad("cc_eventlog", f"event {n}'s SHA-384 digest is not of its AAEL entry")
    try:
        text = data[8:].decode()
    except UnicodeDecodeError:
        raise _bad("cc_eventlog", f"event {n}'s AAEL entry is not UTF-8") from None
    return entry(text, rtmr, f"event {n}'s AAEL entry", "cc_eventlog")


def replay_text(log: str, start: bytes) -> tuple[bytes, list[AaEvent]]:
    """RTMR3 after the legacy text log ``log`` (module docstring, item 2) from ``start`` (the
    RTMR3 the CC event log accounts for), and its entries."""
    lines = log.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # each line ends with a line feed, the last one too
    if not lines or not lines[0].startswith(INIT_PREFIX):
        raise _bad("aa_eventlog", f"the first line is not '{INIT_PREFIX}<hex>'")
    try:
        init = bytes.fromhex(lines[0][len(INIT_PREFIX):])
    except ValueError:
        init = b""
    if len(init) != 48 or lines[0] != INIT_PREFIX + init.hex():
        raise _bad("aa_eventlog", "the INIT line does not hold 48 bytes of lowercase hex")
    if init != start:
        raise _bad("aa_eventlog", "the INIT value is not the RTMR3 the CC event log "
                                  "accounts for (something extended RTMR3 unlogged)")
    events = [entry(line, 3, f"line {i}", "aa_eventlog")
              for i, line in enumerate(lines[1:], start=2)]
    rtmr = init
    for line in lines:
        rtmr = hashlib.sha384(rtmr + hashlib.sha384(line.encode()).digest()).digest()
    return rtmr, events


def claims(events: list[AaEvent]) -> list[dict[str, Any]]:
    """The entries as claims, refused beyond :data:`MAX_CLAIM_BYTES` of JSON (as the token
    encodes it: escapes included)."""
    out = [e.claim() for e in events]
    size = len(json.dumps(out))
    if size > MAX_CLAIM_BYTES:
        raise _bad("cc_eventlog", f"{len(events)} entries make {size} bytes of claims, more "
                                  f"than the {MAX_CLAIM_BYTES} an attestation token carries")
    return out
