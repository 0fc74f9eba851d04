"""Size and count limits on what an image may expand to (decompression-bomb defence).

A layer is a compressed tar from an untrusted registry or archive: a few kilobytes of gzip or
zstd can decompress to terabytes, and its diff_id is only known to be wrong once all of it was
read. So every byte the unpacker produces is metered against a per-layer and a per-image limit
and the unpack is refused (:class:`~arca.host.images.errors.UnsafeArchive`) as soon as one is
crossed, before the disk fills. The same goes for extracting an OCI archive.

The defaults are generous (far above real images); operators can change them through the
environment (``ARCA_IMAGE_MAX_*``, sizes in bytes or with a K/M/G/T suffix, powers of 1024), and
tests or embedders pass an :class:`ImageLimits` to the store.

Not here: manifest/config size bounds (:mod:`.manifest`), the number of layers of an image.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields

from arca.host.images.errors import UnsafeArchive
from arca.wire.errors import ConfigError

GiB = 1 << 30
_SIZE = re.compile(r"([0-9]+)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
_UNIT = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass(frozen=True)
class ImageLimits:
    #: Uncompressed bytes one layer may produce (tar stream, plus sparse holes and hard-link
    #: copy-ups that write more than the stream holds). Real layers stay below a few GiB.
    layer_bytes: int = field(default=16 * GiB, metadata={"env": "ARCA_IMAGE_MAX_LAYER_BYTES"})
    #: The same, summed over the layers unpacked for one image.
    image_bytes: int = field(default=64 * GiB, metadata={"env": "ARCA_IMAGE_MAX_IMAGE_BYTES"})
    #: Tar entries per layer: millions of empty files exhaust inodes and time, not bytes.
    layer_entries: int = field(default=2_000_000,
                               metadata={"env": "ARCA_IMAGE_MAX_LAYER_ENTRIES"})
    #: Bytes extracted from one OCI archive (its blobs, compressed or not).
    archive_bytes: int = field(default=64 * GiB,
                               metadata={"env": "ARCA_IMAGE_MAX_ARCHIVE_BYTES"})
    #: Entries of one OCI archive (a layout holds a few files per image).
    archive_entries: int = field(default=100_000,
                                 metadata={"env": "ARCA_IMAGE_MAX_ARCHIVE_ENTRIES"})

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ImageLimits.{f.name} must be a positive int, got {value!r}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ImageLimits:
        env = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for f in fields(cls):
            name = f.metadata["env"]
            raw = env.get(name)
            if raw is not None and raw.strip():
                values[f.name] = parse_size(raw, name)
        return cls(**values)

    @staticmethod
    def env_name(field_name: str) -> str:
        return str(next(f.metadata["env"] for f in fields(ImageLimits) if f.name == field_name))


def parse_size(text: str, what: str) -> int:
    m = _SIZE.fullmatch(text.strip())
    if not m or int(m.group(1)) <= 0:
        raise ConfigError(f"{what}={text!r}: expected a positive size such as 4096, 512M or 16G")
    return int(m.group(1)) * _UNIT[m.group(2).upper()]


def human(n: int) -> str:
    """``17179869184`` -> ``16 GiB``; exact for powers of 1024, else plain bytes."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


class ImageBudget:
    """The uncompressed bytes left for one image; shared by the meters of its layers.

    Layers may unpack in parallel. Any charge that takes the total past the limit refuses,
    naming the layer that takes it past *in layer order* (the lowest one whose bytes and
    those of the layers below it exceed the limit), as when they unpack one by one."""

    def __init__(self, limit: int) -> None:
        import threading

        self.limit = limit
        self._by_layer: dict[int, int] = {}
        self._labels: dict[int, str] = {}
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return sum(self._by_layer.values())

    def refund(self, n: int, index: int = 0) -> None:
        """Give back what a layer charged before it was thrown away (to be fetched again)."""
        with self._lock:
            self._by_layer[index] = self._by_layer.get(index, 0) - n

    def charge(self, n: int, label: str, index: int = 0) -> None:
        with self._lock:
            self._by_layer[index] = self._by_layer.get(index, 0) + n
            self._labels.setdefault(index, label)
            culprit = self._culprit()
        if culprit is not None:
            self.refuse(culprit)

    def check_ahead(self, n: int, label: str, index: int = 0) -> None:
        """Refuse now if ``n`` more bytes of layer ``index`` would cross the limit."""
        if self.used + n > self.limit:
            self.charge(n, label, index)  # raises
            self.refund(n, index)  # not reached unless the others shrank meanwhile

    def _culprit(self) -> str | None:
        if sum(self._by_layer.values()) <= self.limit:
            return None
        total = 0
        for k in sorted(self._by_layer):
            total += self._by_layer[k]
            if total > self.limit:
                return self._labels.get(k, f"layer {k}")
        return None

    def refuse(self, label: str) -> None:
        raise UnsafeArchive(
            f"{label}: the image expands to more than {human(self.limit)} of uncompressed "
            f"content (per-image limit; raise {ImageLimits.env_name('image_bytes')} if "
            "the image is legitimate)", limit=self.limit)


class LayerMeter:
    """Counts what one layer produces; refuses past the layer or image limit. ``index``: the
    layer's place in its image (see :class:`ImageBudget`)."""

    def __init__(self, label: str, limit: int, image: ImageBudget | None = None,
                 index: int = 0) -> None:
        self.label = label
        self.limit = limit
        self.image = image
        self.index = index
        self.used = 0
        #: bytes of the decompressed tar stream charged so far (the rest of ``used`` is bytes
        #: written beyond the stream: sparse holes, copy-ups)
        self.streamed = 0

    def charge_stream(self, n: int) -> None:
        self.streamed += n
        self.charge(n)

    def charge(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            self._refuse()
        if self.image is not None:
            self.image.charge(n, self.label, self.index)

    def check_ahead(self, n: int) -> None:
        """Refuse now if ``n`` more bytes would cross a limit (before writing any of them)."""
        if self.used + n > self.limit:
            self._refuse()
        if self.image is not None:
            self.image.check_ahead(n, self.label, self.index)

    def _refuse(self) -> None:
        raise UnsafeArchive(
            f"{self.label}: decompresses to more than {human(self.limit)} (per-layer limit; "
            f"raise {ImageLimits.env_name('layer_bytes')} if the image is legitimate)",
            limit=self.limit)
