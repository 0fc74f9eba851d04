"""The agent's own boundary checks (issue 13 items 1, 5, 6 and issue 11 §3), table-driven over
mountinfo as a TD sees it: what may be mounted where, propagation, PID 1, orchestrator
variables and unauthenticated brokers. The same code runs in every backend's guest."""

from __future__ import annotations

import pytest

from arca.guest.boundary import check_boundary, check_mounts, host_mount_refusal
from arca.guest.policy import check_process
from arca.wire.descriptor import ProcessSpec
from arca.wire.errors import PolicyDenied
from arca.wire.initdata import ExecPolicy, InitData, InitDataError

#: mountinfo of a runc TD (containerd's default mounts plus Arca's).
BASE = """\
600 500 0:50 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/l
601 600 0:51 / /proc rw,nosuid - proc proc rw
602 600 0:52 / /dev rw,nosuid - tmpfs tmpfs rw
603 602 0:53 / /dev/pts rw - devpts devpts rw
604 600 0:54 / /sys ro - sysfs sysfs ro
605 600 0:55 / /run rw - tmpfs tmpfs rw
606 600 8:1 /etc/resolv.conf /etc/resolv.conf ro - ext4 /dev/sda1 rw
607 605 0:56 / /run/arca rw - tmpfs tmpfs rw
608 607 0:57 /td/c1 /run/arca/tee ro - tmpfs tmpfs rw
609 600 8:1 /gr /.arca ro - ext4 /dev/sda1 rw
610 601 0:6 /null /proc/kcore ro - devtmpfs udev rw
"""


def line(n: int, mnt: str, fstype: str = "ext4", opt: str = "") -> str:
    return f"{n} 600 8:1 /x {mnt} rw {opt}- {fstype} /dev/sda1 rw\n"


def test_a_normal_td_passes() -> None:
    check_mounts(BASE, ExecPolicy())


DENIED = {
    "bind over the image's /bin": (line(700, "/bin"), ExecPolicy(), "at /bin refused"),
    "over the entrypoint script": (line(700, "/app/run.sh"), ExecPolicy(), "at /app/run.sh"),
    "into the guest runtime": (line(700, "/.arca/lib"), ExecPolicy(), "guest runtime"),
    "into /run/arca": (line(700, "/run/arca/secrets"), ExecPolicy(), "guest runtime"),
    "a second device dir": (line(700, "/run/arca/tee"), ExecPolicy(), "/run/arca"),
    "a second root": (line(700, "/"), ExecPolicy(), "refused"),
    "a bind at /tmp (only tmpfs)": (line(700, "/tmp"), ExecPolicy(), "at /tmp"),
    "escaped name": (line(700, "/my\\040app"), ExecPolicy(), "at /my app"),
    "shared propagation": (line(700, "/data", opt="shared:5 "),
                           ExecPolicy(allow_mounts=("/data",)), "shared propagation"),
    "allowed elsewhere only": (line(700, "/conf"), ExecPolicy(allow_mounts=("/data",)),
                               "policy.allow_mounts"),
}


@pytest.mark.parametrize("extra,policy,words", DENIED.values(), ids=DENIED.keys())
def test_mounts_outside_the_measured_set_are_refused(extra: str, policy: ExecPolicy,
                                                     words: str) -> None:
    with pytest.raises(PolicyDenied, match="mount") as e:
        check_mounts(BASE + extra, policy)
    assert words in str(e.value)


def test_allowed_and_default_mounts_pass() -> None:
    check_mounts(BASE + line(700, "/data") + line(701, "/tmp", "tmpfs")
                 + line(702, "/etc/hosts") + line(703, "/data", opt="shared:3 "),
                 ExecPolicy(allow_mounts=("/data",), allow_propagation=True))
    assert host_mount_refusal("/var/run/secrets/kubernetes.io/serviceaccount", "bind",
                              ExecPolicy()) is None


def test_the_agent_must_be_pid_1_of_its_own_namespace() -> None:
    with pytest.raises(PolicyDenied, match="PID namespace"):
        check_boundary(ExecPolicy(), 4242)


MEASURED = ProcessSpec(("/app",), "/", 0, 0, ("BACKEND_SERVICE_HOST=backend", "PATH=/bin"))


def host(*env: str) -> ProcessSpec:
    return ProcessSpec(("/app",), "/", 0, 0, ("PATH=/bin", "BACKEND_SERVICE_HOST=backend", *env))


def test_orchestrator_variables_only_add() -> None:
    # The minimum adds; a service link of the host's choosing replacing the measured value
    # does not, even when the policy names service links as orchestrator-injected.
    spec = check_process(host("HOSTNAME=x", "KUBERNETES_SERVICE_HOST=10.0.0.1"), MEASURED,
                         ExecPolicy())
    assert "HOSTNAME=x" in spec.env and "KUBERNETES_SERVICE_HOST=10.0.0.1" in spec.env
    steered = ProcessSpec(("/app",), "/", 0, 0, ("BACKEND_SERVICE_HOST=attacker", "PATH=/bin"))
    for policy in (ExecPolicy(), ExecPolicy(orchestrator_env=("*_SERVICE_HOST",))):
        with pytest.raises(PolicyDenied, match="BACKEND_SERVICE_HOST"):
            check_process(steered, MEASURED, policy)
    # Other service links are measured unless the policy lists them.
    with pytest.raises(PolicyDenied, match="DB_SERVICE_PORT"):
        check_process(host("DB_SERVICE_PORT=5432"), MEASURED, ExecPolicy())
    check_process(host("DB_SERVICE_PORT=5432"), MEASURED,
                  ExecPolicy(orchestrator_env=("*_SERVICE_PORT",)))


@pytest.mark.parametrize("data,ok", [
    ('kbs_url = "http://kbs"\n', False),
    ('kbs_url = "https://kbs"\n', False),
    ('kbs_url = "http://kbs"\nagent = \'insecure_kbs = true\'\n', True),
    ('kbs_url = "https://kbs"\nkbs_cert = \'-----BEGIN CERTIFICATE-----x\'\n', True),
    ("", True),
])
def test_unauthenticated_broker_needs_the_explicit_flag(data: str, ok: bool) -> None:
    init = InitData.parse(f'version = "0.1.0"\n[data]\n{data}'.encode())
    if ok:
        init.check_broker_authenticated()
    else:
        with pytest.raises(InitDataError, match="not authenticated.*insecure_kbs"):
            init.check_broker_authenticated()
