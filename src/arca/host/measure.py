"""``arca measure``: the launch measurement of an image, computed from the image alone.

The reference values come from the TEE's backend (:mod:`arca.host.backends`), from exactly
the inputs ``arca-runtime create`` hands the same backend for a container of the image
(contract §3): the guest runtime, the image's root filesystem (the overlay of its layers, as a
container sees it before it starts), and the process containerd's ``ctr run`` / ``arca run``
derive from the image config (:mod:`arca.host.imageconfig`), converted by the runtime's own
``process_spec`` so the two can never drift. Caches the backend fills (the rootfs digest) are
the ones the runtime reads, so measuring an image also makes its first container start faster.

TEEs without a backend in this build are refused by name.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arca.host import paths
from arca.host.backends.base import Backend, BackendUnavailable, LaunchInputs, Reference
from arca.host.imageconfig import ProcessConfig, process_from_image
from arca.host.images import ImageRecord, ImageStore, resolve
from arca.host.images.mount import mount_overlay, umount
from arca.wire.descriptor import LaunchDescriptor
from arca.wire.errors import ConfigError, InvalidInput


@dataclass(frozen=True)
class MeasureResult:
    image: str
    image_digest: str
    reference: Reference
    process: ProcessConfig

    @property
    def descriptor(self) -> LaunchDescriptor:
        return self.reference.descriptor

    @property
    def init_data_hash(self) -> str:
        """Hex of the TEE's init-data field; all zeros without init-data."""
        return self.reference.init_data_hash

    @property
    def measurement(self) -> str:
        return self.reference.measurement

    def to_json(self) -> dict[str, Any]:
        extra = {"launch": dict(self.reference.extra)} if self.reference.extra else {}
        return {
            "image": self.image,
            "image_digest": self.image_digest,
            "tee": self.descriptor.tee,
            "measurement": self.measurement,
            "init_data_hash": self.init_data_hash,
            "guest_runtime_digest": self.descriptor.guest_runtime_digest,
            "rootfs_digest": self.descriptor.rootfs_digest,
            "process": self.descriptor.process.to_json(),
            "descriptor": self.descriptor.to_json(),
            **extra,
        }


@contextlib.contextmanager
def mounted_rootfs(store: ImageStore, record: ImageRecord) -> Iterator[Path]:
    """The image's root filesystem as a read-only-by-convention overlay with an empty upper
    directory (the shape the digest cache recognizes); unmounted and removed on exit."""
    base = paths.run_dir() / "measure"
    base.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=base, prefix="m-"))
    rootfs = scratch / "rootfs"
    try:
        with store.ingesting():  # keeps prune from removing the layers under the mount
            mount_overlay(rootfs, store.lowerdirs(record), scratch / "upper", scratch / "work")
            try:
                yield rootfs
            finally:
                umount(rootfs, lazy=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def backend_for(tee: str, command: str = "arca measure") -> Backend:
    """The backend ``arca measure``/``policy generate`` use: the runtime's, by name."""
    from arca.host import backends

    try:
        return backends.get(tee)
    except (InvalidInput, BackendUnavailable):
        raise ConfigError(f"{command}: tee {tee!r} is not supported (supported: "
                          f"{', '.join(backends.names())})") from None


def measure(image: str, tee: str | None = None, init_data: bytes | None = None, *,
            store: ImageStore | None = None, args: list[str] | None = None,
            env: list[str] | None = None,
            options: dict[str, Any] | None = None) -> MeasureResult:
    """Reference values for a container of ``image`` (optionally with ``args``/``env`` as
    given to ``arca run``) under ``tee`` (default: the registry's default backend), with the
    backend's launch ``options`` (a confidential VM's firmware, kernel, vCPUs...) over its
    runtime configuration."""
    from arca.host import backends
    from arca.host.guestruntime import ensure_guest_runtime
    from arca.host.runtime.bundle import process_spec
    from arca.host.runtime.execpolicy import measured_process, policy_of

    backend = backend_for(tee or backends.DEFAULT).configure(options or {})
    store = store or ImageStore()
    backend.init_data_hash(init_data)  # refuses malformed init-data before any work
    record = resolve(store, image)
    config = store.config_of(record)
    gr = ensure_guest_runtime()
    with mounted_rootfs(store, record) as rootfs:
        from arca.host.hashprogress import warm_rootfs_digest

        warm_rootfs_digest(rootfs, record.name)  # progress on a terminal (first hash only)
        proc = process_from_image(config, rootfs, args=args, env=env)
        # The runtime's rule: what the measured execution policy lets vary is not measured.
        spec = measured_process(process_spec(proc.to_oci()), policy_of(init_data))
        ref = backend.reference(LaunchInputs(rootfs, spec, init_data, gr))
    return MeasureResult(record.name, record.digest, ref, proc)
