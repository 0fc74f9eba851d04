"""Content digests (``algorithm:hex``) and a writer that hashes while it streams.

Only sha256 and sha512 are accepted, as in the OCI image spec; the hex part is checked for
length and lowercase so a digest is also a safe file name.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from arca.host.images.errors import BadManifest, DigestMismatch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    class Hasher(Protocol):
        """What ``hashlib.new`` returns, as used here (its typeshed name, ``hashlib._Hash``,
        is private)."""

        def update(self, data: bytes, /) -> None: ...

        def hexdigest(self) -> str: ...


_HEX_LEN = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True, order=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, value: object, what: str = "digest") -> Digest:
        if not isinstance(value, str):
            raise BadManifest(f"{what} must be a string, got {type(value).__name__}")
        algo, sep, hexpart = value.partition(":")
        if not sep or algo not in _HEX_LEN:
            raise BadManifest(f"{what} {value[:80]!r}: unsupported algorithm (sha256/sha512)")
        if len(hexpart) != _HEX_LEN[algo] or not _HEX.fullmatch(hexpart):
            raise BadManifest(f"{what} {value[:80]!r}: malformed hex part")
        return cls(algo, hexpart)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def hasher(self) -> Hasher:
        return hashlib.new(self.algorithm)

    def verify(self, data: bytes, what: str = "content") -> None:
        actual = hashlib.new(self.algorithm, data).hexdigest()
        if actual != self.hex:
            raise DigestMismatch(
                f"{what}: digest mismatch: expected {self}, got {self.algorithm}:{actual}",
                expected=str(self), actual=f"{self.algorithm}:{actual}",
            )


class VerifyingWriter:
    """Writes to ``fd`` while hashing; :meth:`finish` checks size and digest.

    The size bound is enforced on every write, so a server sending more than the descriptor
    announced is cut off early instead of filling the disk.
    """

    def __init__(self, fd: int, expected: Digest, size: int | None, what: str) -> None:
        self.fd = fd
        self.expected = expected
        self.size = size
        self.what = what
        self.written = 0
        self._h = expected.hasher()

    def write(self, chunk: bytes) -> None:
        self.written += len(chunk)
        if self.size is not None and self.written > self.size:
            raise DigestMismatch(
                f"{self.what}: more data than the {self.size} bytes its descriptor announces",
                expected=self.size,
            )
        self._h.update(chunk)
        view = memoryview(chunk) if self.fd >= 0 else None  # fd -1: check only, store nothing
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def finish(self) -> None:
        if self.size is not None and self.written != self.size:
            raise DigestMismatch(
                f"{self.what}: got {self.written} bytes, its descriptor announces {self.size}"
                " (truncated transfer?)",
                expected=self.size, actual=self.written,
            )
        actual = self._h.hexdigest()
        if actual != self.expected.hex:
            raise DigestMismatch(
                f"{self.what}: digest mismatch: expected {self.expected}, "
                f"got {self.expected.algorithm}:{actual}",
                expected=str(self.expected), actual=f"{self.expected.algorithm}:{actual}",
            )
