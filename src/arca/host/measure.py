"""``arca measure``: the launch measurement of an image, computed from the image alone.

The descriptor is built from exactly the inputs ``arca-runtime create`` uses for a container of
the image (contract §3): the guest runtime digest, the tree digest of the image's root
filesystem (the overlay of its layers, as a container sees it before it starts), and the
process containerd's ``ctr run`` / ``arca run`` derive from the image config
(:mod:`arca.host.imageconfig`), converted by the runtime's own ``process_spec`` so the two can
never drift. The rootfs digest lands in the same cache the runtime reads, so measuring an
image also makes its first container start faster.

For ``tdx`` and ``snp`` the hardware measures the VM's launch instead: the same descriptor's
digest goes on the kernel command line, and the backend computes the reference values over the
firmware, kernel, initramfs and that command line (``HardwareReference``; settings from the
runtime configuration, overridden by ``arca measure`` options). SGX is not measurable here.
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
from arca.host.imageconfig import ProcessConfig, process_from_image
from arca.host.images import ImageRecord, ImageStore, resolve
from arca.host.images.mount import mount_overlay, umount
from arca.wire.descriptor import LaunchDescriptor
from arca.wire.errors import ConfigError
from arca.wire.initdata import InitData
from arca.wire.simreport import INIT_DATA_HASH_SIZE

MEASURABLE_TEES = ("sim", "tdx", "snp")
HARDWARE_TEES = ("tdx", "snp")


@dataclass(frozen=True)
class HardwareReference:
    """The reference values of a confidential VM launch (see the tdx/snp backends)."""

    tee: str
    cmdline: str
    values: dict[str, str]  # every computed claim value (hex; "*" = not pinned)
    claims: dict[str, str]  # what a release policy pins, in grant order
    inputs: dict[str, Any]  # the files and VM shape they were computed over

    def to_json(self) -> dict[str, Any]:
        return {"cmdline": self.cmdline, "values": self.values, "claims": self.claims,
                "inputs": self.inputs}


def hardware_backend(tee: str, overrides: dict[str, Any] | None = None) -> Any:
    """The ``tdx``/``snp`` backend with the runtime configuration and ``overrides``."""
    if tee == "tdx":
        from arca.host.backends.tdx import TdxBackend

        return TdxBackend.from_config(overrides)
    if tee == "snp":
        from arca.host.backends.snp import SnpBackend

        return SnpBackend.from_config(overrides)
    raise ConfigError(f"tee {tee!r} has no hardware launch measurement")


def hardware_reference(tee: str, descriptor: LaunchDescriptor, init_data: bytes | None,
                       overrides: dict[str, Any] | None = None,
                       rootfs_root: str | None = None) -> HardwareReference:
    """What a TD/SNP guest launched for ``descriptor`` reports (pure: files only)."""
    from dataclasses import asdict

    from arca.host.backends._confidential import measured_cmdline

    backend = hardware_backend(tee, overrides)
    s = backend.settings
    cmdline = measured_cmdline(s.cmdline, descriptor.measurement_hex(), rootfs_root)
    ref = backend.reference(cmdline, init_data)
    inputs = {k: v for k, v in asdict(s).items() if k not in ("qemu", "cmdline")}
    return HardwareReference(tee, cmdline, dict(ref.values), backend.claims(ref), inputs)


@dataclass(frozen=True)
class MeasureResult:
    image: str
    image_digest: str
    descriptor: LaunchDescriptor
    process: ProcessConfig
    init_data_hash: str  # hex, 48 bytes as in the sim report; all zeros without init-data
    hardware: HardwareReference | None = None

    @property
    def measurement(self) -> str:
        return self.descriptor.measurement_hex()

    def to_json(self) -> dict[str, Any]:
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
            **({"hardware": self.hardware.to_json()} if self.hardware else {}),
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


def init_data_hash(init_data: bytes | None) -> bytes:
    if init_data is None:
        return bytes(INIT_DATA_HASH_SIZE)
    return InitData.parse(init_data).padded_digest(INIT_DATA_HASH_SIZE)


def measure(image: str, tee: str = "sim", init_data: bytes | None = None, *,
            store: ImageStore | None = None, args: list[str] | None = None,
            env: list[str] | None = None,
            hardware: dict[str, Any] | None = None) -> MeasureResult:
    """Reference values for a container of ``image`` (optionally with ``args``/``env`` as
    given to ``arca run``)."""
    if tee not in MEASURABLE_TEES:
        raise ConfigError(f"arca measure: tee {tee!r} is not supported (supported: "
                          f"{', '.join(MEASURABLE_TEES)})")
    from arca.host.guestruntime import ensure_guest_runtime
    from arca.host.runtime.bundle import process_spec
    from arca.host.runtime.execpolicy import measured_process, policy_of
    from arca.host.treedigest import rootfs_digest

    store = store or ImageStore()
    idh = init_data_hash(init_data)  # refuses malformed init-data before any work
    if tee in HARDWARE_TEES:
        hardware_backend(tee, hardware)  # refuses bad settings before any work
    record = resolve(store, image)
    config = store.config_of(record)
    with mounted_rootfs(store, record) as rootfs:
        proc = process_from_image(config, rootfs, args=args, env=env)
        digest = rootfs_digest(rootfs)
    gr = ensure_guest_runtime()
    # The runtime's rule: what the measured execution policy lets vary is not measured.
    spec = measured_process(process_spec(proc.to_oci()), policy_of(init_data))
    descriptor = LaunchDescriptor(tee, gr.digest, digest, spec)
    hw = (hardware_reference(tee, descriptor, init_data, hardware)
          if tee in HARDWARE_TEES else None)
    return MeasureResult(record.name, record.digest, descriptor, proc, idh.hex(), hw)
