"""The sim daemon's admission of device connections (:class:`arca.host.simtee.daemon.Slots`)
against a model: reserved slots per TD that no other TD can take, a shared pool beyond them,
a per-TD cap, and refusal bursts counted once."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.host.simtee.daemon import (
    MAX_CONCURRENT_REQUESTS,
    MAX_REQUESTS_PER_TD,
    RESERVED_REQUESTS_PER_TD,
    Registration,
    Slots,
)


def td(name: str) -> Registration:
    # Slots only count; descriptor and sockets play no part.
    none: Any = None
    return Registration(name, none, None, none, none)


@settings(max_examples=300, deadline=None)
@given(shared=st.integers(0, 5), reserved=st.integers(0, 3), extra=st.integers(0, 4),
       ops=st.lists(st.tuples(st.booleans(), st.integers(0, 3)), max_size=200))
def test_slots_follow_the_model(shared: int, reserved: int, extra: int,
                                ops: list[tuple[bool, int]]) -> None:
    per_td = reserved + extra
    slots = Slots(shared, reserved, per_td)
    regs = [td(f"t{i}") for i in range(4)]
    held = [0] * 4
    burst = [0] * 4
    for acquire, i in ops:
        in_shared = sum(max(0, n - reserved) for n in held)
        if acquire:
            expect = held[i] < reserved or (held[i] < per_td and in_shared < shared)
            admitted, refused = slots.acquire(regs[i])
            assert admitted == expect
            if held[i] < reserved:
                assert admitted  # the guarantee: whatever the other TDs hold
            if admitted:
                held[i] += 1
            else:
                burst[i] += 1
            assert refused == burst[i]
        elif held[i]:
            held[i] -= 1
            ended = slots.release(regs[i])
            assert ended == (burst[i] if held[i] == 0 else 0)
            if held[i] == 0:
                burst[i] = 0
        assert slots.shared_in_use == sum(max(0, n - reserved) for n in held) <= shared
        assert [r.in_flight for r in regs] == held
        assert all(n <= per_td for n in held)


def test_hostile_tds_holding_the_pool_leave_every_td_its_reserved_slots() -> None:
    slots = Slots(MAX_CONCURRENT_REQUESTS, RESERVED_REQUESTS_PER_TD, MAX_REQUESTS_PER_TD)
    hostile = [td(f"h{i}") for i in range(8)]
    for h in hostile:
        while slots.acquire(h)[0]:
            pass
    assert slots.shared_in_use == MAX_CONCURRENT_REQUESTS
    assert all(h.in_flight <= MAX_REQUESTS_PER_TD for h in hostile)
    honest = td("honest")
    for _ in range(RESERVED_REQUESTS_PER_TD):
        assert slots.acquire(honest)[0]
    assert slots.acquire(honest) == (False, 1)  # beyond its reserve, the pool is taken
    slots.release(honest)
    assert slots.acquire(honest)[0]


def test_concurrent_acquire_and_release_keep_the_counts() -> None:
    slots = Slots(8, 2, 6)
    regs = [td(f"t{i}") for i in range(4)]

    def churn(reg: Registration) -> None:
        for _ in range(2000):
            if slots.acquire(reg)[0]:
                slots.release(reg)

    threads = [threading.Thread(target=churn, args=(r,)) for r in regs for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert slots.shared_in_use == 0 and all(r.in_flight == 0 for r in regs)


@pytest.mark.parametrize(("shared", "reserved", "per_td"), [(-1, 0, 0), (4, 3, 2), (4, -1, 2)])
def test_nonsensical_limits_are_refused(shared: int, reserved: int, per_td: int) -> None:
    with pytest.raises(ValueError, match="bad slot limits"):
        Slots(shared, reserved, per_td)
