"""A private sim platform daemon for a test, and launch descriptors to register with it."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from arca.wire.descriptor import LaunchDescriptor, ProcessSpec


def desc(arg: str) -> LaunchDescriptor:
    """A sim launch descriptor that differs by its process argument only."""
    return LaunchDescriptor("sim", "sha256:" + "a" * 64, "sha256:" + "b" * 64,
                            ProcessSpec((arg,)))


def running_sim(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Body of a ``sim`` fixture: the daemon of an isolated ``ARCA_ROOT``/``ARCA_RUN``,
    yielding :mod:`arca.host.simtee.client`; stopped (and checked gone) afterwards."""
    monkeypatch.setenv("ARCA_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("ARCA_RUN", str(tmp_path / "run"))
    from arca.host.simtee import client

    client.ensure_running()
    yield client
    client.stop()
    assert not client.is_running()
