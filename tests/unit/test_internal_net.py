"""The shared "wait until a started server answers" helper, against real processes."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from arca._internal.net import ServerDidNotStart, port_answers, wait_until_serving
from tests.support.registry import free_port


def start(args: list[str], log: pathlib.Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
def procs():  # type: ignore[no-untyped-def]
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        p.kill()
        p.wait()


def test_returns_once_the_port_answers(tmp_path: pathlib.Path, procs) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    procs.append(start([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                       tmp_path / "log"))
    wait_until_serving(procs[0], "127.0.0.1", port, what="http.server", timeout=20)
    assert port_answers("127.0.0.1", port)


def test_a_dead_process_is_reported_with_its_exit_code_and_log(tmp_path: pathlib.Path,
                                                               procs) -> None:  # type: ignore[no-untyped-def]
    procs.append(start(["sh", "-c", "echo 'bind: address in use' >&2; exit 3"],
                       tmp_path / "log"))
    with pytest.raises(ServerDidNotStart,
                       match="^my-server exited with code 3: bind: address in use$") as info:
        wait_until_serving(procs[0], "127.0.0.1", free_port(), what="my-server", timeout=20,
                           log=tmp_path / "log")
    assert isinstance(info.value, RuntimeError)  # what the fixtures raised before


def test_a_silent_process_times_out(tmp_path: pathlib.Path, procs) -> None:  # type: ignore[no-untyped-def]
    procs.append(start(["sleep", "30"], tmp_path / "log"))
    with pytest.raises(ServerDidNotStart, match=r"did not answer on 127\.0\.0\.1:\d+ within "
                                                r"0\.3 s"):
        wait_until_serving(procs[0], "127.0.0.1", free_port(), what="sleeper", timeout=0.3)
    assert procs[0].poll() is None  # the caller owns the process: not killed here


def test_the_readiness_probe_must_pass_too(tmp_path: pathlib.Path, procs) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    procs.append(start([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                       tmp_path / "log"))
    calls = []

    def ready() -> bool:
        calls.append(1)
        return len(calls) >= 3

    wait_until_serving(procs[0], "127.0.0.1", port, what="http.server", timeout=20, ready=ready)
    assert len(calls) == 3
    with pytest.raises(ServerDidNotStart, match="within 0.2 s"):
        wait_until_serving(procs[0], "127.0.0.1", port, what="http.server", timeout=0.2,
                           ready=lambda: False)
