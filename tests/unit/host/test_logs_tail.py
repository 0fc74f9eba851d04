"""``arca logs --tail N`` starts at the log's last N lines found from its end (podman counts
lines by newline; a last line without one counts): a long log is not read into memory."""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st

from arca.host.containers.engine import tail_start


def expected(data: bytes, n: int) -> bytes:
    lines = data.split(b"\n")
    if lines[-1] == b"":  # the final newline ends the last line
        lines = [ln + b"\n" for ln in lines[:-1]]
    else:
        lines = [ln + b"\n" for ln in lines[:-1]] + [lines[-1]]
    return b"".join(lines[-n:]) if n > 0 else b""


@given(st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\r\n", b"\r", b""]), max_size=40)
       .map(b"".join), st.integers(0, 12), st.integers(1, 7))
def test_the_last_n_lines_whatever_the_block_size(data: bytes, n: int, block: int) -> None:
    f = io.BytesIO(data)
    assert data[tail_start(f, n, block):] == expected(data, n)


def test_known_answers() -> None:
    for data, n, want in ((b"a\nb\nc\n", 2, b"b\nc\n"), (b"a\nb\nc", 1, b"c"),
                          (b"a\nb\nc", 5, b"a\nb\nc"), (b"a\n", 0, b""), (b"", 3, b""),
                          (b"\n\n\n", 2, b"\n\n")):
        assert data[tail_start(io.BytesIO(data), n):] == want, (data, n)


class CountingReads(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.read_bytes = 0

    def read(self, size: int | None = -1) -> bytes:
        out = super().read(size)
        self.read_bytes += len(out)
        return out


def test_a_long_log_is_read_from_its_end_only() -> None:
    data = b"".join(b"line %d\n" % i for i in range(2_000_000))  # ~25 MB
    f = CountingReads(data)
    start = tail_start(f, 2)
    assert data[start:] == b"line 1999998\nline 1999999\n"
    assert f.read_bytes <= 65536 + 1
