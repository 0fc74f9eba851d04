"""``arca exec -t`` / ``-i``: a pseudo-terminal of its own for the exec'd process (runc's
console socket, as ``run -t``), the user's terminal raw with ``-i`` and restored after, the
window size passed on and followed on SIGWINCH, stdin only with ``-i``, the process's exit
code; for ``--tee none`` and a sim TD whose execution policy allows exec, and refused (with the
policy's message, the user's terminal untouched) for a TD whose policy does not.

The user's terminal is a ``pty.openpty()`` pair (:class:`UserTerminal` of the ``run -t``
tests): ``arca`` gets the slave side as its controlling terminal and stdio."""

from __future__ import annotations

import os
import pathlib
import subprocess
import termios
import time
from collections.abc import Iterator

import pytest

from tests.support.arca_run import ARCA, NEEDS_ROOT_RUNC_UMOCI, arca, arca_env
from tests.support.images import build_busybox_image
from tests.support.user_terminal import (
    INTERACTIVE_SCRIPT,
    UserTerminal,
    check_interactive_session,
    opened_terminals,
)

pytestmark = [pytest.mark.integration, NEEDS_ROOT_RUNC_UMOCI]

ALLOW_EXEC = 'version = "0.1.0"\n[data]\npolicy = "allow_exec = true"\n'


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A running container per TEE (the sim one allowing exec), and one TD without a policy."""
    tmp = tmp_path_factory.mktemp("exectty")
    layout = tmp / "layout"
    build_busybox_image(layout, "v1")
    image = f"oci:{layout}:v1"
    allow = tmp / "allow-exec.toml"
    allow.write_text(ALLOW_EXEC)
    with arca_env(tmp, "aet-") as env:
        for args in (["--tee", "none", "--name", "c-none"],
                     ["--tee", "sim", "--init-data", str(allow), "--name", "c-sim"],
                     ["--tee", "sim", "--name", "c-noexec"]):
            res = arca(env, "run", "-d", *args, image, "sleep", "600")
            assert res.returncode == 0, res.stderr
        yield image, env


@pytest.fixture
def terminal() -> Iterator[list[UserTerminal]]:
    yield from opened_terminals()


def leftovers(env: dict[str, str]) -> list[str]:
    """Console sockets, pid and process files an exec left behind."""
    found = [p for p in os.listdir(env["ARCA_RUN"]) if p.startswith("console-")]
    for d in (pathlib.Path(env["ARCA_ROOT"]) / "containers").iterdir():
        if d.is_dir():
            found += [p.name for p in d.iterdir() if p.name.startswith("exec-")]
    return found


@pytest.mark.parametrize("tee", ["none", "sim"])
def test_exec_tty_interactive_on_a_terminal(world: tuple[str, dict[str, str]], tee: str,
                                            terminal: list[UserTerminal]) -> None:
    _, env = world
    t = UserTerminal(env, "exec", "-t", "-i", f"c-{tee}", "sh", "-c", INTERACTIVE_SCRIPT)
    terminal.append(t)
    check_interactive_session(t)
    assert leftovers(env) == []
    # the container itself is untouched by the exec's end
    assert arca(env, "exec", f"c-{tee}", "true").returncode == 0


def test_exec_tty_terminal_restored_when_arca_is_killed(
        world: tuple[str, dict[str, str]], terminal: list[UserTerminal]) -> None:
    _, env = world
    t = UserTerminal(env, "exec", "-t", "-i", "c-none", "sh", "-c",
                     'trap "exit 3" TERM; echo up; while true; do sleep 0.1; done')
    terminal.append(t)
    t.read_until(b"up\r\n")
    assert termios.tcgetattr(t.slave) != t.cooked
    t.proc.terminate()  # passed on to the exec'd process as SIGTERM
    assert t.finish() == 3
    assert termios.tcgetattr(t.slave) == t.cooked
    assert leftovers(env) == []


def test_exec_tty_without_interactive_leaves_the_terminal_alone(
        world: tuple[str, dict[str, str]], terminal: list[UserTerminal]) -> None:
    _, env = world
    t = UserTerminal(env, "exec", "-t", "c-sim", "sh", "-c",
                     "trap 'exit 3' TERM; tty; stty size; read x || echo no-input")
    terminal.append(t)
    t.read_until(b"33 101\r")
    assert termios.tcgetattr(t.slave) == t.cooked  # not raw: no -i
    t.type(b"ignored\n")  # reaches nothing: it keeps waiting for input until stopped
    time.sleep(0.3)
    assert b"no-input" not in t.out
    t.proc.terminate()
    assert t.finish() == 3
    assert t.out.startswith(b"/dev/pts/")


def test_exec_stdin_only_with_interactive(world: tuple[str, dict[str, str]]) -> None:
    _, env = world
    for flags, want in (([], ""), (["-i"], "typed\n")):
        res = subprocess.run([ARCA, "exec", *flags, "c-none", "cat"], input="typed\n",
                             env=env, capture_output=True, text=True, timeout=60)
        assert (res.returncode, res.stdout) == (0, want), res.stderr
    # -t without a terminal: 24x80, output through the exec'd terminal (which echoes the
    # input, as any terminal does, at whatever moment it arrives); end of input ends it
    res = subprocess.run([ARCA, "exec", "-t", "-i", "c-sim", "sh", "-c",
                          "stty size; while read x; do echo got:$x; done; exit 7"],
                         input=b"a\nb\n", env=env, capture_output=True, timeout=60)
    assert res.returncode == 7, res.stderr
    lines = res.stdout.replace(b"\r\n", b"\n").split(b"\n")
    assert lines.count(b"a") == lines.count(b"b") == 1, res.stdout  # the echo
    assert [x for x in lines if x not in (b"a", b"b")] == [b"24 80", b"got:a", b"got:b", b""], \
        res.stdout


@pytest.mark.parametrize("flags", [["-t"], ["-t", "-i"]])
def test_exec_tty_into_a_td_without_allow_exec_is_refused(
        world: tuple[str, dict[str, str]], terminal: list[UserTerminal],
        flags: list[str]) -> None:
    _, env = world
    # (the refusal quotes the command: what would show that it ran is its output, "ran-42")
    res = arca(env, "exec", *flags, "c-noexec", "sh", "-c", "echo ran-$((6*7))")
    assert res.returncode == 1 and "execution policy: allow_exec is not set" in res.stderr, \
        res.stderr
    assert res.stdout == "" and "Traceback" not in res.stderr
    # on a terminal: the same refusal, and the user's terminal never went raw
    t = UserTerminal(env, "exec", *flags, "c-noexec", "sh", "-c", "echo ran-$((6*7))")
    terminal.append(t)
    assert t.finish() == 1
    assert b"allow_exec is not set" in t.out and b"ran-42" not in t.out, t.out
    assert termios.tcgetattr(t.slave) == t.cooked
    assert leftovers(env) == []
