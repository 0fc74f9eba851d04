"""A user's terminal for ``arca run -t`` / ``arca exec -t`` tests: ``arca`` started on a fresh
``pty.openpty()`` pair with the slave side as its controlling terminal and stdio; the test
types into and reads from the master side."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator

from tests.support.arca_run import ARCA


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class UserTerminal:
    """``arca`` started on a fresh pseudo-terminal, as from a user's shell."""

    def __init__(self, env: dict[str, str], *args: str, rows: int = 33, cols: int = 101
                 ) -> None:
        self.master, self.slave = pty.openpty()
        set_size(self.slave, rows, cols)
        self.cooked = termios.tcgetattr(self.slave)
        self.out = b""

        def controlling_terminal() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(  # noqa: PLW1509 - the preexec_fn only sets the ctty
            [ARCA, *args], stdin=self.slave, stdout=self.slave, stderr=self.slave, env=env,
            start_new_session=True, preexec_fn=controlling_terminal)

    def read_until(self, want: bytes, timeout: float = 30) -> bytes:
        deadline = time.monotonic() + timeout
        while want not in self.out:
            left = deadline - time.monotonic()
            assert left > 0, f"{want!r} not seen; got {self.out!r}"
            if select.select([self.master], [], [], min(left, 0.2))[0]:
                try:
                    self.out += os.read(self.master, 65536)
                except OSError:
                    break
        assert want in self.out, f"{want!r} not seen; got {self.out!r}"
        return self.out

    def type(self, text: bytes) -> None:
        os.write(self.master, text)

    def finish(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout)
        while select.select([self.master], [], [], 0.1)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.out += chunk
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


def opened_terminals() -> Iterator[list[UserTerminal]]:
    """Body of a ``terminal`` fixture: the test appends what it opens; all closed after."""
    opened: list[UserTerminal] = []
    yield opened
    for t in opened:
        t.close()


#: A session that shows the terminal's name and size, reads two lines (the size in between
#: changes), reports whether its own terminal is canonical, and exits 5.
INTERACTIVE_SCRIPT = ("tty; stty size; read x; echo got:$x; read y; stty size; "
                      "stty -a | grep -q -- ' icanon' && echo canonical; exit 5")


def check_interactive_session(t: UserTerminal) -> None:
    """Drive ``INTERACTIVE_SCRIPT`` started with ``-t -i`` on ``t`` (33x101): a pts, the user's
    terminal raw while it runs, typed input arriving, a resize followed, exit 5, the process's
    own terminal canonical, and the user's terminal restored after."""
    t.read_until(b"33 101\r\n")
    assert t.out.startswith(b"/dev/pts/"), t.out
    raw = termios.tcgetattr(t.slave)  # no echo, no line editing of its own
    assert not raw[3] & (termios.ECHO | termios.ICANON)
    t.type(b"hello\r")
    t.read_until(b"got:hello\r\n")
    set_size(t.slave, 40, 120)  # the kernel sends SIGWINCH to arca, which passes the size on
    time.sleep(0.5)
    t.type(b"\r")
    t.read_until(b"40 120\r\n")
    assert t.finish() == 5
    # the process's terminal was a normal one (its own line discipline did the echo)
    assert b"hello\r\n" in t.out and b"canonical" in t.out
    assert termios.tcgetattr(t.slave) == t.cooked, "the user's terminal is restored"
