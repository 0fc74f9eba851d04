"""``arca.wire.record``: the run-time stand-in for frozen dataclasses behaves like them."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arca._internal.records import replace
from arca.wire import record
from arca.wire.descriptor import LaunchDescriptor, ProcessSpec
from arca.wire.initdata import ExecPolicy, InitData


@record.dataclass(frozen=True)
class R:
    a: int
    b: str = "x"
    c: list[int] = record.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class D:
    a: int
    b: str = "x"
    c: list[int] = dataclasses.field(default_factory=list)


def test_construction_defaults_and_factories() -> None:
    r = R(1)
    assert (r.a, r.b, r.c) == (1, "x", [])
    assert R(1).c is not R(1).c  # a fresh default per instance
    assert R(1, "y", [2]) == R(a=1, c=[2], b="y")
    assert repr(R(1, "y")) == repr(D(1, "y")).replace("D(", "R(")


@pytest.mark.parametrize(("args", "kw"), [((), {}), ((1, "y", [], 4), {}), ((1,), {"a": 2}),
                                          ((1,), {"zz": 2})])
def test_bad_arguments_are_type_errors(args: tuple, kw: dict) -> None:
    with pytest.raises(TypeError):
        R(*args, **kw)


def test_frozen_eq_hash() -> None:
    r = R(1)
    with pytest.raises(AttributeError):
        r.a = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del r.a  # type: ignore[misc]
    assert R(1) != R(2) and R(1) != D(1) and R(1, "y") == R(1, "y")
    assert hash(ProcessSpec(("a",), env=("X=1",))) == hash(ProcessSpec(("a",), env=("X=1",)))
    assert len({ExecPolicy(), ExecPolicy(), ExecPolicy(allow_exec=True)}) == 2
    with pytest.raises(TypeError):  # a dict field is unhashable, as with dataclasses
        hash(R(1, "x", [1]))


def test_replace() -> None:
    spec = ProcessSpec(("sh",), "/w", 1, 2, ("A=1",))
    assert replace(spec, cwd="/") == ProcessSpec(("sh",), "/", 1, 2, ("A=1",))
    d = LaunchDescriptor("sim", "sha256:" + "0" * 64, "sha256:" + "1" * 64, spec)
    assert replace(d, tee="tdx").process is spec
    assert InitData(b"x").policy == ExecPolicy()


@given(st.integers(), st.text(), st.lists(st.integers()))
def test_behaves_like_dataclasses(a: int, b: str, c: list[int]) -> None:
    r, d = R(a, b, c), D(a, b, c)
    assert (r.a, r.b, r.c) == (d.a, d.b, d.c)
    assert repr(r)[1:] == repr(d)[1:]
    assert (R(a, b, c) == r) and (R(a, b, [*c, 1]) != r)
