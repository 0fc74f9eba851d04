"""SimVerifier's verified-chain cache: a remembered chain is still checked for validity at
every use, only the exact same chain bytes hit, failures are never remembered, and the cache
stays bounded."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from arca.errors import ChainInvalid, Expired, UntrustedRoot
from arca.verifier import sim as sim_module
from arca.verifier.base import Expected
from arca.verifier.sim import SimVerifier
from arca.wire.simreport import SimEvidence
from tests.support.kbs import SimAuthority

RD = bytes(range(64))


@pytest.fixture(scope="module")
def authorities() -> tuple[SimAuthority, SimAuthority]:
    return SimAuthority(), SimAuthority(name="Other Sim Root")


def _swap_chain(evidence: bytes, chain: tuple[str, ...]) -> bytes:
    doc = json.loads(evidence)
    doc["cert_chain"] = list(chain)
    return json.dumps(doc).encode()


def test_cached_chain_still_expires(authorities):
    auth, _ = authorities
    v = SimVerifier([auth.root_pem])
    ev = auth.evidence(RD)
    assert v.verify(ev, expected=Expected(report_data=RD)).tee == "sim"
    assert len(v._chains) == 1
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=60)
    with pytest.raises(Expired, match=r"cert_chain\[0\]"):
        v.verify(ev, expected=Expected(report_data=RD), at=later)
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    with pytest.raises(Expired):
        v.verify(ev, expected=Expected(report_data=RD), at=earlier)
    assert v.verify(ev, expected=Expected(report_data=RD)).tee == "sim"  # hit, valid now


def test_issuing_root_validity_checked_on_hit(authorities):
    auth, _ = authorities
    v = SimVerifier([auth.root_pem])
    leaf_only = (SimEvidence.from_bytes(auth.evidence(RD)).cert_chain[0],)
    ev = _swap_chain(auth.evidence(RD), leaf_only)  # chain ends below the trusted root
    v.verify(ev, expected=Expected(report_data=RD))
    window = next(iter(v._chains.values())).windows[-1]
    assert window.index is None  # the issuing root's window is remembered too
    with pytest.raises(Expired):
        v.verify(ev, expected=Expected(report_data=RD),
                 at=dt.datetime.now(dt.UTC) + dt.timedelta(days=60))


def test_other_chain_bytes_do_not_hit(authorities):
    """A cached genuine chain does not vouch for a forged one with the same leaf text."""
    auth, other = authorities
    v = SimVerifier([auth.root_pem])
    v.verify(auth.evidence(RD), expected=Expected(report_data=RD))
    forged = other.evidence(RD)
    with pytest.raises(UntrustedRoot):
        v.verify(forged, expected=Expected(report_data=RD))
    # the untrusted platform certificate presented above the trusted root: still refused
    mixed = (SimEvidence.from_bytes(forged).cert_chain[0], auth.root_pem.decode())
    with pytest.raises(ChainInvalid):
        v.verify(_swap_chain(forged, mixed), expected=Expected(report_data=RD))
    with pytest.raises(ChainInvalid):  # and again: failures are never remembered
        v.verify(_swap_chain(forged, mixed), expected=Expected(report_data=RD))
    assert len(v._chains) == 1


def test_chain_digest_keeps_entry_boundaries():
    assert sim_module._chain_digest(["ab", "c"]) != sim_module._chain_digest(["a", "bc"])
    assert sim_module._chain_digest(["abc"]) != sim_module._chain_digest(["abc", ""])


def test_cache_is_bounded(monkeypatch, authorities):
    monkeypatch.setattr(sim_module, "CHAIN_CACHE_SIZE", 2)
    v = SimVerifier([a.root_pem for a in authorities])
    evs = [a.evidence(RD) for a in authorities]
    evs.append(_swap_chain(evs[0], SimEvidence.from_bytes(evs[0]).cert_chain[:1]))
    for ev in evs:
        v.verify(ev, expected=Expected(report_data=RD))
    assert len(v._chains) == 2
    assert json.loads(evs[0])  # the evicted chain still verifies (re-checked in full)
    v.verify(evs[0], expected=Expected(report_data=RD))
