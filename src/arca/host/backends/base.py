"""The backend interface: what the host does differently for each TEE, behind one seam.

``arca-runtime create/start/delete`` (:mod:`arca.host.runtime.lifecycle`, also when the sim
daemon runs ``create`` for the C front end), ``arca run`` (through ``arca-runtime``),
``arca measure`` (:mod:`arca.host.measure`) and ``arca policy generate``
(:mod:`arca.host.policygen`) all obtain the *same* backend object from
:func:`arca.host.backends.get` and call :meth:`Backend.reference` on the same
:class:`LaunchInputs`, so the value a running TD reports and the value a tenant pins can never
come from two code paths.

The runtime owns the container lifecycle (``arca.host.runtime.lifecycle``: bundle checks, the
state machine and its files, runc, the config.json rewrite in place and its undo); a backend
owns what is specific to its TEE. Contract of each method:

``check_host()``
    Return when this host can launch the TEE; otherwise raise :class:`BackendUnavailable` with
    the exact reason (missing device, binary, kernel, firmware). No side effects. Called by
    ``create`` before any state is written.
``reference(inputs)``
    The reference values of a launch: measurement, init-data field, descriptor and any other
    launch facts (``Reference.extra``). Deterministic in ``inputs`` (same image, process,
    init-data and shape give the same values on another host with the same Arca); may use
    caches (rootfs digests), may not register or start anything.
``reference_for(descriptor, init_data, extra)``
    Pure: the reference of a launch whose descriptor and other launch facts are known (policy
    generation derives one per allowed command this way). ``reference`` ends in it.
``claims(ref)``
    What a release policy pins for ``ref``: the claims a verifier reports for a TD launched
    with it (at least ``tee``, ``measurement``, ``init_data``).
``prepare(launch, inputs, ref, config)``
    Everything for ``create`` after the runtime recorded state ``creating``: write the TD's
    inputs into ``launch.td_dir``, register with the TEE platform, and return the rewritten
    OCI config (the runtime writes it over the bundle's ``config.json`` atomically, keeping
    the original). For ``sim`` the container's process becomes the agent; a VM backend makes
    it the VM monitor and mounts kernel/initramfs/rootfs image into the container. Must leave
    nothing :meth:`undo` cannot remove if it raises.
``release(launch, init_pid, timeout)``
    ``start``: let the prestarted TD run its workload. Called at most once per container (the
    runtime's ``released`` marker decides which ``start`` calls it). Raise ``StateError`` when
    the TD is gone (``init_pid`` dead) or does not become ready within ``timeout``. The base
    class implements the runtime's one protocol (a byte on the TD directory's ``go`` FIFO),
    run by the sim daemon for the C front end too; a backend whose TD cannot hold the FIFO
    itself (a VM) relays it rather than replacing it.
``check_exec(launch, process)``
    ``exec``: raise ``PolicyDenied`` unless the TD's measured policy allows ``process``.
``exec_process(launch, process)``
    ``exec`` (after ``check_exec``): the process ``runc exec`` is to start in the container in
    place of ``process``, or ``None`` for ``process`` itself (the TD is the container). A VM
    backend's stands in for it and hands it to the guest, which checks it again: an exec
    must never run silently in the VMM's host-side container.
``undo(cid)``
    Remove the backend's side effects of any prefix of ``prepare`` (registration, platform
    objects). Idempotent, safe with nothing to undo, safe after ``kill -9`` of a ``create`` and
    when the platform is not running. The runtime removes its own files afterwards.

Kept cheap to import (no ``typing``, no ``dataclasses``: see :mod:`arca.wire.record`): the
runtime imports it on every TEE ``create``.
"""

from __future__ import annotations

from arca.errors import ConfigError, StateError
from arca.wire import tees

TYPE_CHECKING = False
if TYPE_CHECKING:
    import pathlib
    from collections.abc import Mapping
    from dataclasses import dataclass, field
    from typing import Any

    from arca.host.guestruntime import GuestRuntime
    from arca.wire.descriptor import LaunchDescriptor, ProcessSpec
else:
    from arca.wire.record import dataclass, field


class BackendUnavailable(ConfigError):
    """This host (or this build) cannot launch the TEE; the message says exactly why."""


@dataclass(frozen=True)
class LaunchInputs:
    """What a launch is computed from: the same for ``create``, ``arca measure`` and
    ``arca policy generate``."""

    #: The container's root filesystem directory (a bundle's rootfs, or an image's layers
    #: mounted for measurement).
    rootfs: pathlib.Path
    #: The measured process (execution-policy patterns applied, orchestrator variables out).
    process: ProcessSpec
    #: Init-data TOML as bound into the evidence, or ``None``.
    init_data: bytes | None
    #: The guest runtime (interpreter + ``arca.guest`` + ``arca.wire``) the TD runs.
    guest_runtime: GuestRuntime
    #: The OCI config (resources, mounts, annotations): a VM backend sizes the VM from it.
    #: Empty when measuring an image alone (the backend's default shape).
    oci: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reference:
    """The reference values of one launch."""

    tee: str
    #: Hex of the measurement the TD's evidence reports.
    measurement: str
    #: Hex of the init-data field (``tees.Tee.init_data_hash``), all zeros without init-data.
    init_data_hash: str
    descriptor: LaunchDescriptor
    #: Other launch facts of the backend (a VM's kernel/initramfs digests, rootfs root hash,
    #: shape): shown by ``arca measure``, passed back to ``reference_for``.
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"tee": self.tee, "measurement": self.measurement,
                "init_data_hash": self.init_data_hash, "descriptor": self.descriptor.to_json(),
                "extra": dict(self.extra)}


@dataclass(frozen=True)
class Launch:
    """Where one container's launch lives on the host (the runtime's locations)."""

    #: The container id (validated).
    cid: str
    #: The bundle directory (its ``config.json`` is rewritten in place).
    bundle: pathlib.Path
    #: The TD's host directory, created by the runtime, bind-mountable into the container,
    #: removed by the runtime at delete.
    td_dir: pathlib.Path


class Backend:
    """Base class of the backends: the shared rules; see the module docstring for the
    contract of each method. ``platform`` is how the backend reaches its TEE platform when
    the caller already holds it (the sim daemon runs ``create`` in-process); ``None``: the
    backend's own client."""

    #: The TEE's name: a key of :data:`arca.wire.tees.TEES`.
    name = ""
    #: The claims of :meth:`claims` a release policy pins, in grant order (after ``tee``), and
    #: those it may leave open as ``*`` (arca.host.policygen).
    pinned: tuple[str, ...] = ("measurement", "init_data")
    optional: tuple[str, ...] = ()
    #: Components of the ``reported_tcb`` claim a policy may require minimums of, for a TEE
    #: whose verifier reports no TCB status (SNP); empty: the verifier's status decides.
    tcb_components: tuple[str, ...] = ()
    #: The TD's processes run on this host's kernel in a user namespace of their own (ADR
    #: 0048); ``arca run`` then makes its private network namespace inside it.
    user_namespace = False

    def __init__(self, platform: Any = None) -> None:
        self.platform = platform

    @property
    def facts(self) -> tees.Tee:
        return tees.get(self.name)

    def check_host(self) -> None:
        raise NotImplementedError

    def host_problems(self) -> list[str]:
        """Every reason this host cannot launch the TEE (``arca doctor``); by default the one
        :meth:`check_host` gives, so both always agree."""
        try:
            self.check_host()
        except ConfigError as e:
            return [str(e)]
        return []

    def configure(self, options: Mapping[str, Any]) -> Backend:
        """This backend with launch options (``arca measure --vcpus`` ...) over its settings;
        a backend without any refuses them."""
        if options:
            raise ConfigError(f"tee {self.name!r} takes no launch options "
                              f"(got {', '.join(sorted(options))})")
        return self

    def init_data_hash(self, init_data: bytes | None) -> bytes:
        """The init-data field this TEE reports for ``init_data`` (parsed: refuses bad input)."""
        if init_data is None:
            return self.facts.init_data_hash(None)
        from arca.wire.initdata import InitData

        return self.facts.init_data_hash(InitData.parse(init_data).digest())

    def reference(self, inputs: LaunchInputs) -> Reference:
        raise NotImplementedError

    def reference_for(self, descriptor: LaunchDescriptor, init_data: bytes | None,
                      extra: Mapping[str, str]) -> Reference:
        raise NotImplementedError

    def claims(self, ref: Reference) -> dict[str, str]:
        return {"tee": ref.tee, "measurement": ref.measurement, "init_data": ref.init_data_hash,
                **ref.extra}

    def prepare(self, launch: Launch, inputs: LaunchInputs, ref: Reference,
                config: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def release(self, launch: Launch, init_pid: int, timeout: float) -> None:
        """The runtime's release protocol, the same for every backend (the sim daemon runs it
        for the C front end, ADR 0046): one byte to the ``go`` FIFO in the TD directory once
        the TD's side holds it open. The agent opens it ``O_RDWR`` first thing, so a
        non-blocking open for writing succeeds exactly when it is there; a VM backend relays it
        to its guest.

        Where the agent itself takes the byte (no VM between), ``start`` also waits until it
        has (at most :data:`TAKEN_TIMEOUT_S`, or until the agent ended): it reads the byte only
        once its secrets are placed (ADR 0003), so a caller's ``exec`` right after ``start``
        (``ctr run -d`` then ``ctr task exec``, ``arca run -d`` then ``arca exec``) finds them,
        as runc's ``start`` returns once the process runs. A VM's monitor relays the byte only
        after its guest booted: waiting there would hold ``start`` for the boot."""
        import errno
        import os
        import time

        from arca.host.runtime.state import GO_FIFO

        cid, go = launch.cid, launch.td_dir / GO_FIFO
        deadline = time.monotonic() + timeout
        while True:
            try:
                fd = os.open(go, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                break
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise StateError(f"cannot start container {cid}: {go}: {e.strerror}"
                                     ) from None
            if not _alive(init_pid):
                raise StateError(f"cannot start a container that has stopped: the agent of TEE "
                                 f"container {cid} exited before start")
            if time.monotonic() > deadline:
                raise StateError(f"cannot start container {cid}: its agent did not wait for "
                                 f"start within {timeout:.0f}s")
            time.sleep(0.001)
        try:
            os.write(fd, b"1")
            if not self.facts.launch_measured:
                _wait_taken(fd, init_pid, TAKEN_TIMEOUT_S)
        finally:
            os.close(fd)

    def check_exec(self, launch: Launch, process: dict[str, Any]) -> None:
        """Allowed only when the TD's measured init-data execution policy sets
        ``allow_exec`` (:mod:`arca.host.runtime.execpolicy`), whatever the TEE."""
        from arca.host.runtime.execpolicy import check_exec

        check_exec(launch.cid, launch.td_dir, process)

    def exec_process(self, launch: Launch, process: dict[str, Any]) -> dict[str, Any] | None:
        return None

    def processes(self, cid: str, init_pid: int) -> list[dict[str, Any]] | None:
        """The workload's processes as its TD sees them (``arca top``), for a backend whose
        container process is not the workload (a VMM): pid, ppid, uid, user, cpu_s, command.
        ``None``: the host's view of the container's cgroup (``runc ps``) is the workload."""
        return None

    def undo(self, cid: str) -> None:
        raise NotImplementedError


#: How long ``start`` waits for the agent to take ``go`` (it may still be attesting); after
#: that ``start`` returns anyway: the agent goes on by itself, only the wait is given up.
TAKEN_TIMEOUT_S = 60.0


def _wait_taken(fd: int, init_pid: int, timeout: float) -> None:
    """Until the byte written to the FIFO ``fd`` is read (FIONREAD counts what is unread; the
    byte is never read here), the reader ``init_pid`` ended, or ``timeout``."""
    import fcntl
    import sys
    import termios
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(init_pid):
        unread = fcntl.ioctl(fd, termios.FIONREAD, bytes(4))
        if int.from_bytes(unread, sys.byteorder) == 0:
            return
        time.sleep(0.002)


def _alive(pid: int) -> bool:
    """Running (not a zombie); unknown pids count as alive (the timeout bounds the wait)."""
    if pid <= 0:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False
