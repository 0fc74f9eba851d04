from __future__ import annotations

import hashlib
import json

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from arca.host.runtime.bundle import measured_env
from arca.wire.descriptor import LaunchDescriptor, ProcessSpec
from arca.wire.errors import WireFormatError


def sample() -> LaunchDescriptor:
    return LaunchDescriptor(
        tee="sim",
        guest_runtime_digest="sha256:" + "aa" * 32,
        rootfs_digest="sha256:" + "bb" * 32,
        process=ProcessSpec(("/bin/sh", "-c", "echo hi"), "/", 0, 0, ("PATH=/bin",)),
    )


def test_measurement_is_sha384_of_jcs() -> None:
    d = sample()
    assert d.measurement() == hashlib.sha384(rfc8785.dumps(d.to_json())).digest()
    assert len(d.measurement()) == 48


def test_round_trip() -> None:
    d = sample()
    assert LaunchDescriptor.from_bytes(json.dumps(d.to_json()).encode()) == d


@pytest.mark.parametrize(
    "mutate",
    [
        lambda o: o.update(tee="tdx"),
        lambda o: o.update(rootfs_digest="sha256:" + "cc" * 32),
        lambda o: o["process"].update(args=["/bin/sh", "-c", "cat /run/arca/secrets/*"]),
        lambda o: o["process"].update(env=["PATH=/bin", "LD_PRELOAD=/x.so"]),
        lambda o: o["process"]["user"].update(uid=1000),
        lambda o: o["process"].update(cwd="/tmp"),
    ],
)
def test_every_field_is_measured(mutate) -> None:  # type: ignore[no-untyped-def]
    obj = sample().to_json()
    mutate(obj)
    assert LaunchDescriptor.from_json(obj).measurement() != sample().measurement()


def test_orchestrator_env_not_measured() -> None:
    env = ["PATH=/bin", "HOSTNAME=abc", "KUBERNETES_SERVICE_HOST=10.0.0.1", "FOO_SERVICE_PORT=80"]
    # Issue 13 item 5: only the minimum is left out; other service links steer where the
    # workload connects and are measured unless the init-data policy lists them.
    assert measured_env(env) == ("FOO_SERVICE_PORT=80", "PATH=/bin")
    assert measured_env(["B=1", "A=2"]) == ("A=2", "B=1")


@pytest.mark.parametrize(
    "bad",
    [
        b"not json",
        b"[]",
        b'{"version": 1}',
        json.dumps({**sample().to_json(), "unknown": 1}).encode(),
        json.dumps({**sample().to_json(), "version": 2}).encode(),
        json.dumps({**sample().to_json(), "process": {"args": []}}).encode(),
    ],
)
def test_malformed_descriptor_refused(bad: bytes) -> None:
    with pytest.raises(WireFormatError):
        LaunchDescriptor.from_bytes(bad)


@given(st.binary(max_size=512))
def test_parser_raises_only_its_own_error(data: bytes) -> None:
    try:
        LaunchDescriptor.from_bytes(data)
    except WireFormatError:
        pass
