"""Support for end-to-end secret delivery tests: a recording TCP proxy in front of a KBS (or any
TCP service: to capture what a client sends and receives, for replay attacks and wire checks),
and a scan of host directories for plaintext secrets.

Start the KBS itself with :func:`tests.support.kbs.start_kbs` (``--trust-sim-root`` the sim
root of the test's ``ARCA_ROOT``, ``--admin-public-key`` from
:func:`tests.support.kbs.admin_keypair`) and administer it with
:class:`arca.kbs.admin_client.AdminClient`.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


@dataclass
class Exchange:
    """One TCP connection through the proxy: bytes each way, and when (``time.monotonic``)
    it was accepted and when both directions were done."""

    request: bytearray = field(default_factory=bytearray)
    response: bytearray = field(default_factory=bytearray)
    opened: float = field(default_factory=time.monotonic)
    closed: float | None = None

    @property
    def request_line(self) -> str:
        return bytes(self.request).split(b"\r\n", 1)[0].decode(errors="replace")


class RecordingProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream`` and records every connection. When the
    upstream refuses, the client's connection is closed without an answer (a KBS that is
    down looks the same to the TD: no HTTP response)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.exchanges: list[Exchange] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        ex = Exchange()
        with self._lock:
            self.exchanges.append(ex)
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            client.close()
            return
        pumps = [threading.Thread(target=_pump, args=(client, upstream, ex.request)),
                 threading.Thread(target=_pump, args=(upstream, client, ex.response))]
        for t in pumps:
            t.start()
        for t in pumps:
            t.join(30)
        ex.closed = time.monotonic()
        client.close()
        upstream.close()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def sent(self) -> bytes:
        """Everything clients sent through the proxy."""
        with self._lock:
            return b"".join(bytes(e.request) for e in self.exchanges)

    def captured(self) -> bytes:
        with self._lock:
            return b"".join(bytes(e.request) + bytes(e.response) for e in self.exchanges)

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


def _pump(src: socket.socket, dst: socket.socket, record: bytearray) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            record += data
            dst.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def recording_proxy(upstream: tuple[str, int]) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy(upstream)
    try:
        yield proxy
    finally:
        proxy.close()


#: Files larger than this are skipped by the scan (image blobs of tests are far smaller).
MAX_SCAN_FILE = 256 * 1024 * 1024


def _same_device(path: str, dev: int) -> bool:
    try:
        return os.lstat(path).st_dev == dev
    except OSError:  # vanished while scanning (containerd removes snapshots concurrently)
        return False


def files_containing(needles: Iterable[bytes], roots: Iterable[pathlib.Path]) -> list[str]:
    """Regular files under ``roots`` (symlinks not followed, other mounts not entered
    except the roots themselves) whose content contains any of ``needles``."""
    needles = [n for n in needles if n]
    longest = max(len(n) for n in needles)
    hits = []
    for root in roots:
        if not root.exists():
            continue
        dev = root.stat().st_dev
        for dirpath, dirnames, filenames in os.walk(root):
            # Mounted container root filesystems live under the roots; their content is the
            # image's, and a TD's tmpfs is never mounted in the host's namespace anyway.
            dirnames[:] = [d for d in dirnames if _same_device(os.path.join(dirpath, d), dev)]
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SCAN_FILE:
                        continue
                    if _contains(path, needles, longest):
                        hits.append(path)
                except OSError:
                    continue  # vanished while scanning
    return hits


def _contains(path: str, needles: list[bytes], longest: int) -> bool:
    tail = b""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            window = tail + chunk
            if any(n in window for n in needles):
                return True
            tail = window[-(longest - 1):] if longest > 1 else b""
    return False
