"""Terminals for ``arca run -t``: the console socket, the local terminal, and the copy loop.

With ``-t`` the container's process gets a pseudo-terminal made by runc (``process.terminal``):
runc sends its master side over the ``--console-socket`` (one ``SCM_RIGHTS`` message) to the
container's supervisor, which keeps it for the container's life (the foreground ``arca run``,
or the monitor of ``-d``, which copies it into the container's log). For a TD the agent is the
process runc starts on that terminal and ``execve``s the workload on it, so the workload has
the terminal too.

The local terminal: in the foreground with ``-i`` and stdin on a terminal, that terminal goes
raw (keys, Ctrl-C included, go to the container's terminal, whose own line discipline acts on
them) and is restored when the container exits, also on errors. Without ``-i`` it stays as it
is and Ctrl-C reaches ``arca run``, which passes SIGINT on. The window size is copied to the
container's terminal at the start and on every SIGWINCH.

Attaching to a detached container later: :mod:`.attach` (``-d -i``: the monitor's stdin pipe
is copied to the terminal here).
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import termios

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: How long the supervisor waits for runc to send the terminal after ``create``/``run``
#: returned (it is sent before runc returns; this only bounds a broken runtime).
RECEIVE_TIMEOUT_S = 10.0
#: The window size of a terminal nobody gives a size to (``-d -t``, or no local terminal).
DEFAULT_SIZE = (24, 80)
CHUNK = 65536
#: After the container's process exited, how long its terminal may stay open (another process
#: still holding it) before the last output is given up.
FINAL_DRAIN_S = 2.0


class ConsoleSocket:
    """A listening unix socket at ``path`` for runc's ``--console-socket``."""

    def __init__(self, path: str) -> None:
        import socket

        self.path = path
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.bind(path)
            os.chmod(path, 0o600)
            self._sock.listen(1)
        except BaseException:
            self.close()
            raise

    def receive(self, timeout: float = RECEIVE_TIMEOUT_S) -> int:
        """The terminal's master fd runc sent; OSError if none came within ``timeout``."""
        import socket

        self._sock.settimeout(timeout)
        conn, _ = self._sock.accept()
        with conn:
            conn.settimeout(timeout)
            _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 4)
        if not fds:
            raise OSError("runc sent no terminal over the console socket")
        for extra in fds[1:]:
            os.close(extra)
        os.set_inheritable(fds[0], False)
        return fds[0]

    def close(self) -> None:
        self._sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def window_size(fd: int) -> tuple[int, int] | None:
    """(rows, columns) of the terminal ``fd``, or None if it is not a terminal."""
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return (rows, cols) if rows and cols else None


def set_window_size(fd: int, size: tuple[int, int]) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))


def local_terminal() -> int | None:
    """The fd of the user's terminal (stdin, else stdout), or None."""
    for fd in (0, 1):
        if os.isatty(fd):
            return fd
    return None


class RawMode:
    """Puts terminal ``fd`` into raw mode (as ``tty.setraw``) and restores it on exit; does
    nothing for None or a non-terminal."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd if fd is not None and os.isatty(fd) else None
        self._saved: list[Any] | None = None

    def __enter__(self) -> RawMode:
        if self.fd is not None:
            import tty

            self._saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd, termios.TCSANOW)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None and self._saved is not None:
            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            except termios.error:
                pass  # the terminal went away (hang-up): nothing to restore


def _write_all(fd: int, data: bytes) -> bool:
    """Write everything (``fd`` may be non-blocking: wait until writable); False if the
    reader went away (EPIPE, EIO), so the caller stops copying there."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        except OSError:
            return False
        view = view[n:]
    return True


#: After the end of input: how often, and after how long a quiet terminal, end-of-file is
#: sent again (see :func:`pump`).
EOF_RESENDS = 5
EOF_RESEND_S = 0.5


def pump(master: int, pid: int, *, out_fd: int, in_fd: int | None) -> None:
    """Copy the container's terminal to ``out_fd`` (and ``in_fd``, if any, to it) until the
    process ``pid`` has exited, then what it wrote last. Returns when ``pid`` is gone; the
    caller reaps it. End of input sends the terminal's end-of-file character (Ctrl-D), as a
    user typing it would."""
    os.set_blocking(master, False)
    pidfd = os.pidfd_open(pid)
    pending = b""  # input the container's terminal has not taken yet
    reading_in = in_fd is not None
    master_open = True
    eof_resends = 0
    try:
        while True:
            rl = [pidfd]
            if master_open:
                rl.append(master)
                if reading_in and not pending:
                    rl.append(in_fd)  # type: ignore[arg-type]
            wl = [master] if master_open and pending else []
            # After the end of input, the terminal's end-of-file character again whenever the
            # terminal stays quiet: one sent while the program switched its terminal mode (a
            # shell starting its line editor) can be lost, and no more input will ever come.
            idle = EOF_RESEND_S if eof_resends and master_open and not pending else None
            readable, writable, _ = select.select(rl, wl, [], idle)
            if not (readable or writable) and eof_resends:
                eof_resends -= 1
                pending += _eof_char(master)
                continue
            if master in readable:
                master_open = _drain(master, out_fd)
            if writable and master_open:
                try:
                    pending = pending[os.write(master, pending):]
                except BlockingIOError:
                    pass
                except OSError:
                    pending, reading_in = b"", False
            if in_fd is not None and in_fd in readable:
                try:
                    data = os.read(in_fd, CHUNK)
                except OSError:
                    data = b""
                if data:
                    pending += data
                else:
                    reading_in = False
                    pending += _eof_char(master)
                    eof_resends = EOF_RESENDS
            if pidfd in readable:
                break
        # What it wrote last may still be on its way through the terminal: read until the
        # terminal reports closed (every process on it is gone), bounded for a stray holder.
        import time

        deadline = time.monotonic() + FINAL_DRAIN_S
        while master_open and select.select([master], [], [],
                                            max(0.0, deadline - time.monotonic()))[0]:
            master_open = _drain(master, out_fd)
    finally:
        os.close(pidfd)


def _drain(master: int, out_fd: int) -> bool:
    """Copy what the terminal has now; False once it is closed (EIO: no slave side left)."""
    while True:
        try:
            data = os.read(master, CHUNK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        _write_all(out_fd, data)


def _eof_char(master: int) -> bytes:
    try:
        c = termios.tcgetattr(master)[6][termios.VEOF]
    except (termios.error, IndexError):
        return b"\x04"
    return c if isinstance(c, bytes) and c else b"\x04"
