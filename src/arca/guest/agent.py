"""The in-TD agent: PID 1 of every confidential container until it becomes the workload.

It checks the host-supplied process against the measured descriptor and execution policy,
checks that its own fresh report binds that descriptor and init-data, attests to the KBS with
that same report (checked before it leaves) and places the secrets, waits for the host's
``start`` (the ``go`` FIFO), then drops privileges and ``execve``s the workload (same PID).
docs/guest.md has the steps and why; the TEE's signature is the relying party's to verify.
Exit codes: 126 policy refusal or failed evidence check, 125 other failure, 127 cannot exec.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from hmac import compare_digest

from arca.guest.boundary import check_boundary
from arca.guest.evidence import SOURCES, EvidenceSource, evidence_document
from arca.guest.policy import check_process, host_process
from arca.wire.constants import SIM_DEVICE_DIR, TD_RUN_DIR
from arca.wire.descriptor import LaunchDescriptor, ProcessSpec
from arca.wire.errors import (
    ArcaError,
    BindingMismatch,
    BrokerUnavailable,
    ConfigError,
    EvidenceError,
    PolicyDenied,
    WireFormatError,
)
from arca.wire.initdata import ExecPolicy, InitData
from arca.wire.record import dataclass
from arca.wire.simreport import REPORT_DATA_SIZE, SimEvidence
from arca.wire.tees import SIM_DEVICE, TEES

TYPE_CHECKING = False  # typing costs ms per start: see arca.wire.record
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

#: A single backoff sleep never exceeds this, whatever init-data asks.
MAX_BACKOFF_SECONDS = 30.0
#: Filesystems that keep secrets in (TD) memory.
MEMORY_FS = ("tmpfs", "ramfs")


@dataclass(frozen=True)
class Paths:
    device_dir: str = SIM_DEVICE_DIR
    run_dir: str = TD_RUN_DIR

    def input(self, name: str) -> str:
        return os.path.join(self.device_dir, name)


@dataclass(frozen=True)
class Inputs:
    descriptor: LaunchDescriptor
    host: ProcessSpec
    init_data: InitData | None
    #: What a launch-measured VM booted (``launch-record.json``, RFC 8785, written by
    #: :mod:`arca.guest.vminit` in guest RAM from its own command line and vCPU count).
    launch_record: bytes | None = None


def read_inputs(paths: Paths) -> Inputs:
    descriptor = LaunchDescriptor.from_bytes(_read(paths, "descriptor.json"))
    try:
        host = host_process(json.loads(_read(paths, "process.json")))
    except (ValueError, UnicodeDecodeError) as e:
        raise WireFormatError(f"process.json is not JSON: {e}") from None
    init = _read(paths, "init-data.toml", optional=True)
    return Inputs(descriptor, host, None if init is None else InitData.parse(init),
                  _read(paths, "launch-record.json", optional=True))


def _read(paths: Paths, name: str, optional: bool = False) -> Any:  # bytes, None if absent
    try:
        with open(paths.input(name), "rb") as f:
            return f.read()
    except FileNotFoundError:
        if not optional:
            raise
        return None


def source_for(tee: str, paths: Paths) -> EvidenceSource:
    """The TEE's evidence source per ``arca.wire.tees``. A descriptor lying about its TEE yields
    evidence the relying party refuses (it pins the TEE type and roots): nothing leaks."""
    facts = TEES.get(tee)
    make = SOURCES.get(facts.source) if facts is not None else None
    if make is None:
        raise ValueError(f"this agent has no evidence source for tee {tee!r}")
    return make(tee, paths.device_dir)


def check_evidence(inputs: Inputs, source: EvidenceSource,
                   report_data: bytes | None = None) -> tuple[bytes, bytes]:
    """(report data, evidence) whose report binds our descriptor and init-data."""
    report_data = report_data or os.urandom(REPORT_DATA_SIZE)
    evidence = source.get_evidence(report_data)
    facts = TEES.get(source.tee)
    if facts is None or not facts.agent_checks_report:
        raise EvidenceError(f"this agent cannot check {source.tee} reports yet")
    report = SimEvidence.from_bytes(evidence).report()
    if report.tee != source.tee:
        raise BindingMismatch(f"evidence check failed: report is for tee {report.tee!r}",
                              field="tee")
    expected_init = facts.init_data_hash(inputs.init_data.digest() if inputs.init_data
                                         else None)
    checks = [("report data (stale or replayed report)", report.report_data, report_data),
              ("init-data hash (init-data.toml is not the bound init-data)",
               report.init_data_hash, expected_init)]
    if not facts.launch_measured:
        checks.append(("measurement (descriptor.json is not the measured descriptor)",
                       report.measurement, inputs.descriptor.measurement()))
    elif inputs.launch_record is None:
        raise BindingMismatch("evidence check failed: no launch record of this VM",
                              field="measurement")
    else:  # the VM's launch: the descriptor is bound by the command line (checked by vminit)
        booted = hashlib.sha384(inputs.launch_record).digest()
        checks.append(("measurement (this VM did not boot the measured kernel command line "
                       "and vCPUs)", report.measurement, booted))
    for what, got, want in checks:
        if not compare_digest(got, want):
            raise BindingMismatch(f"evidence check failed: {what}", field=what.split(" (")[0])
    return report_data, evidence


def fetch_secrets(init: InitData, source: EvidenceSource,
                  evidence: Callable[[bytes], bytes] | None = None) -> tuple[dict[str, bytes], Any]:
    """Attest with ``evidence`` (default: the source's) and fetch every resource, retrying
    while the KBS is down: the secrets and the runtime-data the attested report binds."""
    # Imported here: a container without a KBS should not pay for the client (the guest
    # runtime ships it anyway: its builder imports every module).
    from arca.guest.kbs_client import KbsClient

    assert init.kbs_url is not None
    opts, last = init.agent, None
    for attempt in range(opts.kbs_retries + 1):
        if attempt:
            time.sleep(min(opts.kbs_backoff * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS))
        try:
            client = KbsClient(init.kbs_url, tee=source.tee,
                               evidence=evidence or source.get_evidence,
                               ca_pem=init.kbs_cert.encode() if init.kbs_cert else None,
                               init_data_toml=init.raw.decode(), timeout=opts.kbs_timeout,
                               tee_key=opts.tee_key)
            client.attest()
            return ({r.name: client.get_resource(r.path) for r in init.resources},
                    client.runtime_data)
        except BrokerUnavailable as e:
            last = e
    raise BrokerUnavailable(f"KBS {init.kbs_url} unavailable after {opts.kbs_retries + 1} "
                            f"attempts; last error: {last}", url=init.kbs_url)


def _fs_type(path: str) -> str:
    """Filesystem type of the mount holding ``path`` (longest mount-point prefix wins)."""
    path, best, fstype = os.path.realpath(path), "", ""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields, _, tail = line.partition(" - ")
            mnt = fields.split()[4].replace("\\040", " ")
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, fstype = mnt, tail.split()[0]
    return fstype


def place_secrets(init: InitData, secrets: dict[str, bytes], spec: ProcessSpec,
                  run_dir: str) -> list[str]:
    """Write file secrets (tmpfs only); return ``NAME=value`` entries for env secrets."""
    env: list[str] = []
    files = [r for r in init.resources if r.file]
    if files:
        if _fs_type(run_dir) not in MEMORY_FS:
            raise ConfigError(f"{run_dir} is not a memory filesystem; refusing to write secrets")
        sdir = os.path.join(run_dir, "secrets")
        os.mkdir(sdir, 0o700)
        for r in files:
            fd = os.open(os.path.join(sdir, r.name),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets[r.name])
                os.fchown(f.fileno(), spec.uid, spec.gid)
        os.chown(sdir, spec.uid, spec.gid)
        os.chmod(sdir, 0o500)
    for r in init.resources:
        if r.env:
            try:
                value = secrets[r.name].decode("utf-8")
            except UnicodeDecodeError:
                raise ConfigError(f"resource {r.path} is not UTF-8; it cannot go into "
                                  f"${r.env}") from None
            if "\0" in value:
                raise ConfigError(f"resource {r.path} contains NUL; it cannot go into ${r.env}")
            env.append(f"{r.env}={value}")
    return env


def become_workload(spec: ProcessSpec) -> None:
    """Create a missing cwd (as runc does), drop privileges, chdir, restore signals."""
    try:
        if not os.path.isdir(spec.cwd):
            os.makedirs(spec.cwd, 0o755)
        # Only what changes: a root workload then needs no CAP_SETUID/CAP_SETGID (plain runc's
        # default spec has neither); other users need both, as with runc's own user switch.
        if os.getgroups():
            os.setgroups([])
        if (os.getgid(), os.getegid()) != (spec.gid, spec.gid):
            os.setgid(spec.gid)
        if (os.getuid(), os.geteuid()) != (spec.uid, spec.uid):
            os.setuid(spec.uid)
        os.chdir(spec.cwd)
    except OSError as e:
        raise ConfigError(f"cannot become user {spec.uid}:{spec.gid} in {spec.cwd!r}: "
                          f"{e.strerror}") from None
    # Python ignores SIGPIPE and SIGXFSZ; ignored dispositions survive execve.
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)


def run(paths: Paths) -> NoReturn:
    # Started by the host's ``create``: work now, run the workload only once ``start`` writes
    # to ``go`` (docs/guest.md). As PID 1 we would ignore SIGTERM meanwhile; ``kill`` must work.
    signal.signal(signal.SIGTERM, lambda sig, _f: os._exit(128 + sig))
    go = os.open(paths.input("go"), os.O_RDWR) if os.path.exists(paths.input("go")) else None
    try:
        inputs = read_inputs(paths)
        source = source_for(inputs.descriptor.tee, paths)
        init = inputs.init_data
        policy = init.policy if init else ExecPolicy()
        spec = check_process(inputs.host, inputs.descriptor.process, policy)
        facts = TEES.get(inputs.descriptor.tee)
        if paths.device_dir == SIM_DEVICE_DIR and facts is not None and \
                facts.source == SIM_DEVICE and not facts.launch_measured:
            # A container TD (tests run the agent elsewhere); a VM TD's boundary is the VM,
            # whose init (PID 1, arca.guest.vminit) made the agent's mounts itself.
            check_boundary(policy, os.getpid())
        if init is not None:
            init.check_broker_authenticated()
        extra_env: list[str] = []
        if init is not None and init.kbs_url is not None:
            checked: list[tuple[bytes, bytes]] = []

            def evidence(report_data: bytes) -> bytes:  # checked before it goes to the broker
                checked.append(check_evidence(inputs, source, report_data))
                return checked[-1][1]

            secrets, runtime_data = fetch_secrets(init, source, evidence)
            write_evidence(paths, evidence_document(source.tee, *checked[-1], runtime_data))
            extra_env = place_secrets(init, secrets, spec, paths.run_dir)
        else:
            write_evidence(paths, evidence_document(source.tee, *check_evidence(inputs, source)))
    finally:  # failures too are reported only once released (the same line, the same code)
        if go is not None:
            os.read(go, 1)
    if init is not None and init.agent.insecure_kbs and init.kbs_url is not None:
        print(f"arca-agent: warning: the KBS {init.kbs_url} was not authenticated "
              "(agent.insecure_kbs)", file=sys.stderr)
    become_workload(spec)
    env = dict(e.partition("=")[::2] for e in (*spec.env, *extra_env))
    try:
        os.execvpe(spec.args[0], list(spec.args), env)  # noqa: S606 - no shell, by design
    except OSError as e:
        print(f"arca-agent: error: cannot execute {spec.args[0]!r}: {e.strerror}",
              file=sys.stderr)
        sys.exit(127 if isinstance(e, FileNotFoundError) else 126)  # as a shell says it


def write_evidence(paths: Paths, document: bytes) -> None:
    with open(os.path.join(paths.run_dir, "evidence.json"), "wb") as f:
        f.write(document)
        os.fchmod(f.fileno(), 0o444)


def main(paths: Paths | None = None) -> int:
    try:
        run(paths or Paths())
    except (ArcaError, OSError, ValueError, RecursionError) as e:  # deep JSON nesting
        print(f"arca-agent: error: {e}", file=sys.stderr)
        return 126 if isinstance(e, (PolicyDenied, EvidenceError)) else 125


if __name__ == "__main__":
    sys.exit(main())
