"""``arca run -t`` / ``-i``: a pseudo-terminal for the workload (runc's console socket), the
user's terminal raw while it runs and restored after, the window size passed on and followed on
SIGWINCH, for ``--tee none`` and a sim TD (whose agent execs the workload on the same
terminal); ``-d -t`` with the terminal's output in ``arca logs``; stdin only with ``-i``.

The user's terminal is a ``pty.openpty()`` pair: ``arca`` gets the slave side as its controlling
terminal and stdio, the test types into and reads from the master side."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import termios
import time
from collections.abc import Iterator

import pytest

from tests.support.arca_run import ARCA, NEEDS_ROOT_RUNC_UMOCI, arca, image_world
from tests.support.user_terminal import (
    INTERACTIVE_SCRIPT,
    UserTerminal,
    check_interactive_session,
    opened_terminals,
)

pytestmark = [pytest.mark.integration, NEEDS_ROOT_RUNC_UMOCI]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    with image_world(tmp_path_factory, "tty", "att-") as (layout, env, _):
        yield f"oci:{layout}:v1", env


@pytest.fixture
def terminal() -> Iterator[list[UserTerminal]]:
    yield from opened_terminals()


@pytest.mark.parametrize("tee", ["none", "sim"])
def test_tty_interactive_on_a_terminal(world: tuple[str, dict[str, str]], tee: str,
                                       terminal: list[UserTerminal]) -> None:
    image, env = world
    t = UserTerminal(env, "run", "--rm", "-t", "-i", "--tee", tee, image, "sh", "-c",
                     INTERACTIVE_SCRIPT)
    terminal.append(t)
    check_interactive_session(t)
    assert json.loads(arca(env, "ps", "-a", "--json").stdout) == []


def test_terminal_restored_when_the_container_is_killed(world: tuple[str, dict[str, str]],
                                                        terminal: list[UserTerminal]) -> None:
    image, env = world
    # (the container's init ignores signals it has no handler for, as any PID 1)
    t = UserTerminal(env, "run", "--rm", "-t", "-i", "--tee", "none", image, "sh", "-c",
                     'trap "exit 3" TERM; echo up; while true; do sleep 0.1; done')
    terminal.append(t)
    t.read_until(b"up\r\n")
    assert termios.tcgetattr(t.slave) != t.cooked
    t.proc.terminate()  # passed on to the container as SIGTERM
    assert t.finish() == 3
    assert termios.tcgetattr(t.slave) == t.cooked


def test_tty_without_interactive_leaves_the_terminal_alone(
        world: tuple[str, dict[str, str]], terminal: list[UserTerminal]) -> None:
    image, env = world
    t = UserTerminal(env, "run", "--rm", "-t", "--tee", "none", image,
                     "sh", "-c", "trap 'exit 3' TERM; tty; "
                     "stty -a | grep -q -- ' icanon' && echo canonical; stty size; "
                     "read x || echo no-input")
    terminal.append(t)
    t.read_until(b"33 101\r")  # "\r\r\n": the user's terminal is not raw, so it adds a \r
    assert termios.tcgetattr(t.slave) == t.cooked  # not raw: no -i
    # nothing typed reaches it; it keeps waiting for input that never comes until stopped
    t.type(b"ignored\n")
    time.sleep(0.3)
    assert b"no-input" not in t.out
    t.proc.terminate()
    assert t.finish() == 3
    assert t.out.startswith(b"/dev/pts/") and b"canonical" in t.out


@pytest.mark.parametrize("tee", ["none", "sim"])
def test_detached_tty_output_in_logs(world: tuple[str, dict[str, str]], tee: str) -> None:
    image, env = world
    res = arca(env, "run", "-d", "-t", "--tee", tee, "--name", f"dt-{tee}", image,
               "sh", "-c", "tty; stty size; echo hi; sleep 60")
    assert res.returncode == 0, res.stderr
    deadline = time.monotonic() + 20
    while b"hi" not in (logs := subprocess.run([ARCA, "logs", f"dt-{tee}"], env=env,
                                               capture_output=True, timeout=30).stdout):
        assert time.monotonic() < deadline, logs
        time.sleep(0.1)
    lines = logs.split(b"\r\n")
    assert lines[0].startswith(b"/dev/pts/") and lines[1:3] == [b"24 80", b"hi"], logs
    assert arca(env, "rm", "-f", f"dt-{tee}").returncode == 0
    assert not [p for p in os.listdir(env["ARCA_RUN"]) if p.startswith("console-")]


def test_stdin_only_with_interactive(world: tuple[str, dict[str, str]]) -> None:
    image, env = world
    for flags, want in (([], ""), (["-i"], "typed\n")):
        res = subprocess.run([ARCA, "run", "--rm", "--tee", "none", *flags, image, "cat"],
                             input="typed\n", env=env, capture_output=True, text=True,
                             timeout=60)
        assert (res.returncode, res.stdout) == (0, want), res.stderr
    # -t -i without a terminal: the input goes through the container's terminal (echoed by
    # it, as by any terminal) and end of input ends the workload's read
    res = subprocess.run([ARCA, "run", "--rm", "--tee", "none", "-t", "-i", image, "sh", "-c",
                          "while read x; do echo got:$x; done; echo eof"], input=b"a\nb\n",
                         env=env, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.replace(b"\r\n", b"\n").split(b"\n")[-3:] == [b"got:b", b"eof", b""]
    assert b"got:a" in res.stdout


def test_a_terminal_does_not_change_the_measurement(world: tuple[str, dict[str, str]]) -> None:
    """``terminal``/``consoleSize`` are not part of the measured process: the TD of a ``-t``
    container has the same launch descriptor as without."""
    image, env = world
    descriptors = []
    for flags in (["-t"], []):
        res = arca(env, "run", "-d", "--tee", "sim", *flags, image, "sleep", "30")
        assert res.returncode == 0, res.stderr
        cid = res.stdout.strip()
        path = pathlib.Path(env["ARCA_RUN"]) / "td" / cid / "descriptor.json"
        descriptors.append(json.loads(path.read_text()))
        assert arca(env, "rm", "-f", cid).returncode == 0
    assert descriptors[0] == descriptors[1]


def test_attach_to_a_detached_terminal_and_detach_with_ctrl_p_ctrl_q(
        world: tuple[str, dict[str, str]], terminal: list[UserTerminal]) -> None:
    """``run -d -i -t`` then ``attach``: the user's terminal goes raw, keys reach the
    container's terminal, Ctrl-P Ctrl-Q detaches (podman's keys) and leaves it running."""
    image, env = world
    res = arca(env, "run", "-d", "-i", "-t", "--name", "att-tty", "--tee", "none", image,
               "sh", "-c", "echo up; while read x; do echo got:$x; done; exit 6")
    assert res.returncode == 0, res.stderr
    try:
        deadline = time.monotonic() + 60
        while "up" not in arca(env, "logs", "att-tty").stdout:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        t = UserTerminal(env, "attach", "att-tty")
        terminal.append(t)
        _until_raw(t)  # attached: raw once it follows the log, then it sends what we type
        t.type(b"hello\r")
        t.read_until(b"got:hello")
        t.type(b"\x10\x11")
        assert t.finish() == 0
        assert termios.tcgetattr(t.slave) == t.cooked
        assert json.loads(arca(env, "inspect", "att-tty").stdout)["state"] == "running"
        # attached again, its end of input (Ctrl-D on its terminal) ends it with its code
        t2 = UserTerminal(env, "attach", "att-tty")
        terminal.append(t2)
        _until_raw(t2)
        t2.type(b"\x04")
        assert t2.finish() == 6
    finally:
        arca(env, "rm", "-f", "att-tty")


def _until_raw(t: UserTerminal) -> None:
    deadline = time.monotonic() + 60
    while termios.tcgetattr(t.slave) == t.cooked:
        assert time.monotonic() < deadline, t.out
        time.sleep(0.05)
    time.sleep(0.2)  # raw comes just before its input thread starts
