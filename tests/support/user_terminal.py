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
