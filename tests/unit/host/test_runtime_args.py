"""``arca-runtime create``/``delete`` option parsing (hand-written, no argparse on the hot
path) agrees with an argparse parser of the same options on every input argparse accepts."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.host.runtime.lifecycle import _go_flags, parse_create, parse_delete
from arca.wire.errors import InvalidInput


class _Reference(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise ValueError(message)


def reference(command: str) -> argparse.ArgumentParser:
    p = _Reference(prog=command, add_help=False, allow_abbrev=False)
    p.add_argument("id")
    if command == "create":
        p.add_argument("--bundle", "-b", default=".")
        p.add_argument("--pid-file")
        p.add_argument("--console-socket")
        p.add_argument("--no-pivot", action="store_true")
        p.add_argument("--no-new-keyring", action="store_true")
        p.add_argument("--preserve-fds", type=int, default=0)
        p.add_argument("--detach", "-d", action="store_true")
        p.add_argument("--keep", action="store_true")
    else:
        p.add_argument("--force", "-f", action="store_true")
    return p


TOKENS = ["--bundle", "-bundle", "-b", "/b", "--pid-file", "/p", "--console-socket=/s",
          "--no-pivot", "-no-new-keyring", "--preserve-fds", "3", "--preserve-fds=x", "-d",
          "--keep", "--force", "-f", "c1", "c2", "--bogus", "--bundle=/x"]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["create", "delete"]), st.lists(st.sampled_from(TOKENS), max_size=7))
def test_agrees_with_argparse(command: str, args: list[str]) -> None:
    try:
        want = vars(reference(command).parse_args(_go_flags(args)))
    except ValueError:
        want = None
    parse = parse_create if command == "create" else parse_delete
    try:
        got = vars(parse(args))
    except InvalidInput:
        got = None
    if want is not None:  # we may refuse a little more (e.g. "--bundle --keep"), never less
        assert got == want


@pytest.mark.parametrize("args", [[], ["a", "b"], ["--bogus", "c"], ["--bundle"],
                                  ["--preserve-fds", "x", "c"], ["--no-pivot=1", "c"]])
def test_refusals(args: list[str]) -> None:
    with pytest.raises(InvalidInput):
        parse_create(args)
