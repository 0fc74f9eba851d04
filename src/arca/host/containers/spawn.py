"""Run ``arca-runtime`` as a child: ``posix_spawn`` instead of :mod:`subprocess`.

``subprocess`` costs ~4 ms of imports (threading, selectors, locale) on every ``arca run``,
and what the engine needs is small: run a program with an absolute argument vector, wait,
maybe read its stderr. As ``subprocess.run(close_fds=True)`` does, only stdin/stdout/stderr
reach the child (descriptors our parent left us are made non-inheritable first; Python's own
are non-inheritable already), and SIGPIPE/SIGXFSZ, which Python ignores, are reset to their
defaults for it. No working-directory change: callers pass absolute paths.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


def _seal_inherited_fds() -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)
            except OSError:
                pass  # the directory's own descriptor, closed meanwhile


def spawn(argv: list[str], *, env: Mapping[str, str] | None = None, quiet: bool = False,
          stderr_fd: int | None = None, no_stdin: bool = False,
          stdout_fd: int | None = None) -> int:
    """Start ``argv``; its pid. ``quiet``: stdout and stderr to /dev/null; ``stderr_fd``:
    stderr to that descriptor (stdout to /dev/null, unless ``stdout_fd`` names one);
    ``no_stdin``: stdin from /dev/null."""
    import signal  # here: a module that only waits for children need not load it

    _seal_inherited_fds()
    actions: list[tuple[object, ...]] = []
    if no_stdin:
        actions.append((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
    if stdout_fd is not None:
        actions.append((os.POSIX_SPAWN_DUP2, stdout_fd, 1))
        if stderr_fd is not None:
            actions.append((os.POSIX_SPAWN_DUP2, stderr_fd, 2))
    elif quiet or stderr_fd is not None:
        actions.append((os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0))
        if stderr_fd is None:
            actions.append((os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0))
        else:
            actions.append((os.POSIX_SPAWN_DUP2, stderr_fd, 2))
    return os.posix_spawnp(argv[0], argv, os.environ if env is None else env,
                           file_actions=actions, setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))


def wait(pid: int) -> int:
    """The exit code of child ``pid`` (negative: killed by that signal, as subprocess)."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        return os.waitstatus_to_exitcode(status)


def run(argv: list[str], *, env: Mapping[str, str] | None = None, quiet: bool = False,
        no_stdin: bool = False, stdout_fd: int | None = None,
        stderr_fd: int | None = None) -> int:
    return wait(spawn(argv, env=env, quiet=quiet, no_stdin=no_stdin, stdout_fd=stdout_fd,
                      stderr_fd=stderr_fd))


def run_capturing_stderr(argv: list[str], *, env: Mapping[str, str] | None = None
                         ) -> tuple[int, str]:
    """(exit code, stderr as text); stdout is discarded."""
    r, w = os.pipe()
    try:
        pid = spawn(argv, env=env, stderr_fd=w)
    finally:
        os.close(w)
    chunks = []
    with open(r, "rb") as f:
        while chunk := f.read(65536):
            chunks.append(chunk)
    return wait(pid), b"".join(chunks).decode(errors="replace")
