"""Networking of ``arca run`` containers: a private network namespace per container (default),
the host's (``--network host``), or one with only a loopback interface (``--network none``).

A private namespace is connected to the outside by ``pasta`` (package ``passt``, podman's
default), which translates the container's layer-2 traffic into ordinary sockets of the host:
outbound connections work, nothing reaches the container unless published with ``-p``
(:class:`PortMapping`), and no other container shares its loopback interface or sees its
traffic (ADR 0026). The container gets ``10.0.2.100/24`` behind a gateway ``10.0.2.2`` and a
DNS forwarder ``10.0.2.3`` (slirp4netns' addresses, which podman users know), IPv4 only.

pasta is started with everything it would do on its own turned off: no automatic forwarding
of ports bound on either side (``-t/-u/-T/-U none`` unless published) and no mapping of the
gateway address to the host's loopback (``--no-map-gw``). The one exception is the key
broker: a TD's init-data names it, measured, and the demo and tests run it on the host's
loopback (``http://127.0.0.1:PORT``); that TCP port alone is forwarded from the container's
loopback to the host's (:func:`loopback_broker_ports`), so the measured URL works unchanged
and no other host-loopback service is reachable.

Lifetime: the namespace is a file under ``ARCA_RUN/netns`` (an nsfs bind mount, as ``ip netns
add`` makes), created by the container's supervisor right before the runtime's ``create``;
pasta starts on it meanwhile and must be ready before the workload can run (:func:`start`,
:func:`wait_ready`); both are removed when the container exits (:func:`teardown`, also called
by ``rm``). What the container asked for is ``network.json`` in its directory
(:meth:`NetworkPlan.load`): the ``vm`` backend reads :attr:`NetworkPlan.publish` from there
(:meth:`PortMapping.qemu_hostfwd`).

Not here: user-defined networks, container-to-container networks, IPv6, ``-p`` without a host
port.
"""

from __future__ import annotations

import os

from arca._internal.fastjson import json_dumps, json_loads
from arca.wire.errors import ArcaError, InvalidInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: ``--network`` values; "private" is the default.
MODES = ("private", "host", "none")
#: Addresses inside a private namespace (slirp4netns' defaults).
CONTAINER_ADDRESS = "10.0.2.100"
NETMASK_BITS = "24"
GATEWAY = "10.0.2.2"
DNS_FORWARDER = "10.0.2.3"
PLAN_FILE = "network.json"
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


class NetworkError(ArcaError):
    """The container's network could not be set up."""


class PortMapping:
    """One ``-p/--publish [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]``: connections to
    ``host_ip:host_port`` on the host (all addresses when ``host_ip`` is empty) reach
    ``container_port`` in the container."""

    __slots__ = ("host_ip", "host_port", "container_port", "proto")

    def __init__(self, host_ip: str, host_port: int, container_port: int,
                 proto: str = "tcp") -> None:
        self.host_ip, self.host_port = host_ip, host_port
        self.container_port, self.proto = container_port, proto

    @classmethod
    def parse(cls, spec: str) -> PortMapping:
        ports, slash, proto = spec.partition("/")
        proto = proto if slash else "tcp"
        if proto not in ("tcp", "udp"):
            raise InvalidInput(f"-p {spec!r}: protocol must be tcp or udp")
        ip, _, rest = ports.rpartition(":")
        host_ip, _, host_port = ip.rpartition(":") if ip else ("", "", "")
        if not ip:
            raise InvalidInput(f"-p {spec!r}: expected [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]")
        if not host_port:
            host_ip, host_port = "", ip
        if host_ip:
            import ipaddress

            try:
                if ipaddress.ip_address(host_ip.strip("[]")).version != 4:
                    raise ValueError("IPv6")
            except ValueError:
                raise InvalidInput(f"-p {spec!r}: {host_ip!r} is not an IPv4 address") from None
        return cls(host_ip, _port(host_port, spec), _port(rest, spec), proto)

    def pasta_args(self) -> list[str]:
        flag = "-t" if self.proto == "tcp" else "-u"
        return [flag, f"{self.host_ip + '/' if self.host_ip else ''}"
                      f"{self.host_port}:{self.container_port}"]

    def qemu_hostfwd(self) -> str:
        """The same mapping as a QEMU user-networking ``hostfwd=`` value."""
        return f"{self.proto}:{self.host_ip}:{self.host_port}-:{self.container_port}"

    def to_json(self) -> dict[str, Any]:
        return {"host_ip": self.host_ip, "host_port": self.host_port,
                "container_port": self.container_port, "proto": self.proto}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PortMapping:
        return cls(str(obj["host_ip"]), int(obj["host_port"]), int(obj["container_port"]),
                   str(obj["proto"]))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PortMapping) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"PortMapping({self.host_ip!r}, {self.host_port}, {self.container_port}, " \
               f"{self.proto!r})"


def _port(value: str, spec: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise InvalidInput(f"-p {spec!r}: {value!r} is not a port number (1-65535)")
    return int(value)


def loopback_broker_ports(init_data: bytes | None) -> list[int]:
    """The TCP port of the key broker the init-data names when it is on the host's loopback
    (``http://127.0.0.1:PORT``): forwarded from the container's loopback to the host's."""
    if init_data is None:
        return []
    from urllib.parse import urlsplit

    from arca.wire.initdata import InitData

    try:
        url = InitData.parse(init_data).kbs_url
    except ArcaError:
        return []  # refused by the runtime, with its own message, before anything runs
    if not url:
        return []
    parts = urlsplit(url)
    host = (parts.netloc.rpartition("@")[2]).rpartition(":")[0] or parts.netloc
    if host not in _LOOPBACK_HOSTS and not host.startswith("127."):
        return []
    try:
        port = parts.port
    except ValueError:
        return []
    return [port or (443 if parts.scheme == "https" else 80)]


class NetworkPlan:
    """What a container asked for: the mode, its published ports, the host-loopback TCP ports
    its key broker needs (:func:`loopback_broker_ports`), and whether the network must be
    ready before the runtime's ``create`` (``early``: a TD with init-data, whose agent may
    talk to its broker while prestarted) or only before ``start``."""

    __slots__ = ("mode", "publish", "broker_ports", "early")

    def __init__(self, mode: str = "private", publish: list[PortMapping] | None = None,
                 broker_ports: list[int] | None = None, early: bool = False) -> None:
        self.mode = mode
        self.publish = list(publish or [])
        self.broker_ports = list(broker_ports or [])
        self.early = early

    @classmethod
    def parse(cls, mode: str | None, publish: list[str] | None,
              init_data: bytes | None = None) -> NetworkPlan:
        mode = mode or "private"
        if mode not in MODES:
            raise InvalidInput(f"--network {mode!r}: must be one of {', '.join(MODES)}")
        ports = [PortMapping.parse(p) for p in publish or []]
        if ports and mode != "private":
            raise InvalidInput(f"-p/--publish needs a private network, not --network {mode}")
        seen = set()
        for p in ports:
            if (p.proto, p.host_port) in seen:
                raise InvalidInput(f"-p: host port {p.host_port}/{p.proto} published twice")
            seen.add((p.proto, p.host_port))
        broker = loopback_broker_ports(init_data) if mode == "private" else []
        return cls(mode, ports, broker, early=init_data is not None)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "publish": [p.to_json() for p in self.publish],
                "broker_ports": self.broker_ports, "early": self.early}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> NetworkPlan:
        return cls(str(obj["mode"]), [PortMapping.from_json(p) for p in obj["publish"]],
                   [int(p) for p in obj["broker_ports"]], bool(obj.get("early", True)))

    def save(self, container_dir: str) -> None:
        from arca._internal.fsutil import write_atomic

        write_atomic(os.path.join(container_dir, PLAN_FILE), json_dumps(self.to_json()).encode(),
                     0o600, durable=False)

    @classmethod
    def load(cls, container_dir: str) -> NetworkPlan:
        """The plan of a container; one made before networks existed used the host's."""
        try:
            with open(os.path.join(container_dir, PLAN_FILE), "rb") as f:
                return cls.from_json(json_loads(f.read()))
        except FileNotFoundError:
            return cls("host")


def netns_path(run_dir: str, cid: str) -> str:
    return os.path.join(run_dir, "netns", cid)


def spec_network(plan: NetworkPlan, netns: str, resolv_conf: str
                 ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The OCI namespace entry (None: the host's network) and the mounts that depend on the
    network: a private or empty namespace gets its own sysfs and, when private, a resolv.conf
    naming pasta's DNS forwarder."""
    if plan.mode == "host":
        return None, []
    ns: dict[str, Any] = {"type": "network"}
    if plan.mode == "private":
        ns["path"] = netns
    mounts: list[dict[str, Any]] = [
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]}]
    if plan.mode == "private":
        mounts.append({"destination": "/etc/resolv.conf", "type": "bind", "source": resolv_conf,
                       "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]})
    return ns, mounts


def resolv_conf_text(host_resolv: str = "/etc/resolv.conf") -> str:
    """pasta's forwarder as the only name server, the host's search domains and options."""
    lines = [f"nameserver {DNS_FORWARDER}"]
    try:
        with open(host_resolv, encoding="utf-8", errors="replace") as f:
            lines += [ln.strip() for ln in f if ln.split()[:1] in (["search"], ["options"])]
    except OSError:
        pass
    return "\n".join(lines) + "\n"


def pasta_argv(plan: NetworkPlan, netns: str, pid_file: str) -> list[str]:
    argv = ["pasta", "--config-net", "--netns", netns, "--quiet", "--pid", pid_file,
            # root's pasta cannot join a root-owned namespace as "nobody" (passt 2023.03)
            "--runas", "0",
            "--ipv4-only", "--address", CONTAINER_ADDRESS, "--netmask", NETMASK_BITS,
            "--gateway", GATEWAY, "--dns-forward", DNS_FORWARDER, "--no-map-gw"]
    tcp = [p for p in plan.publish if p.proto == "tcp"]
    udp = [p for p in plan.publish if p.proto == "udp"]
    for ports, flag in ((tcp, "-t"), (udp, "-u")):
        if ports:
            for p in ports:
                argv += p.pasta_args()
        else:
            argv += [flag, "none"]
    argv += ["-T", ",".join(str(p) for p in plan.broker_ports) if plan.broker_ports else "none",
             "-U", "none"]
    return argv


class Starting:
    """pasta connecting a container's namespace (:func:`start`); :func:`wait_ready` waits."""

    __slots__ = ("pid", "err_fd", "plan", "run_dir", "cid")

    def __init__(self, pid: int, err_fd: int, plan: NetworkPlan, run_dir: str,
                 cid: str) -> None:
        self.pid, self.err_fd, self.plan, self.run_dir, self.cid = (pid, err_fd, plan, run_dir,
                                                                    cid)


def start(plan: NetworkPlan, run_dir: str, cid: str, userns: str | None = None
          ) -> Starting | None:
    """Make the container's namespace and start pasta on it, without waiting for pasta to be
    ready (it is about as slow as the runtime's ``create``, which can run meanwhile); None
    when the container needs no pasta. ``userns``: the kept user namespace of a TD's uid
    range, which must own the network namespace (ADR 0048)."""
    if plan.mode != "private":
        return None
    from arca.host.containers import spawn

    pasta = _which("pasta")
    if pasta is None:
        raise NetworkError("pasta is not installed (Debian package passt): it connects a "
                           "container's private network; or run with --network host")
    netns = netns_path(run_dir, cid)
    os.makedirs(os.path.dirname(netns), mode=0o700, exist_ok=True)
    if os.path.exists(netns):
        teardown(run_dir, cid)  # left by a supervisor that was killed: start afresh
    try:
        _make_netns(netns) if userns is None else _make_netns_in(netns, userns)
        r, w = os.pipe()
        try:
            pid = spawn.spawn([pasta, *pasta_argv(plan, netns, netns + PASTA_PID)[1:]],
                              stderr_fd=w, no_stdin=True)
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
    except OSError as e:
        teardown(run_dir, cid)
        raise NetworkError(f"cannot create the container's network namespace: "
                           f"{e.strerror or e}") from None
    except BaseException:
        teardown(run_dir, cid)
        raise
    return Starting(pid, r, plan, run_dir, cid)


def wait_ready(starting: Starting | None) -> None:
    """Wait until pasta has connected the namespace (it goes to the background then); on
    failure remove what :func:`start` made and raise :class:`NetworkError` with pasta's
    reason."""
    if starting is None:
        return
    from arca.host.containers import spawn

    chunks = []
    with open(starting.err_fd, "rb") as f:  # pasta's daemon closes it: EOF once it is ready
        while chunk := f.read(65536):
            chunks.append(chunk)
    code = spawn.wait(starting.pid)
    if code == 0:
        return
    teardown(starting.run_dir, starting.cid)
    err = b"".join(chunks).decode(errors="replace")
    why = "; ".join(ln.strip() for ln in err.splitlines()
                    if ln.strip() and "syslog" not in ln) or f"exit status {code}"
    ports = ", ".join(f"{p.host_port}/{p.proto}" for p in starting.plan.publish)
    raise NetworkError(f"pasta could not connect the container's network"
                       f"{' (publishing ' + ports + ')' if ports else ''}: {why}")


def abandon(starting: Starting | None) -> None:
    """The container will not run: wait for pasta (so it is not left half-started) and
    remove the namespace; never raises."""
    if starting is None:
        return
    try:
        wait_ready(starting)
    except ArcaError:
        pass
    teardown(starting.run_dir, starting.cid)


def setup(plan: NetworkPlan, run_dir: str, cid: str) -> None:
    """:func:`start` and :func:`wait_ready` in one."""
    wait_ready(start(plan, run_dir, cid))


def _which(name: str) -> str | None:
    """``shutil.which`` without importing shutil (and with it re, enum, fnmatch: ≈ 4 ms of
    every ``arca run``)."""
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        p = os.path.join(d or ".", name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


CLONE_NEWNET = 0x40000000
MS_BIND = 4096
PASTA_PID = ".pasta.pid"


def _make_netns(path: str) -> None:
    """A new network namespace (only ``lo``, down) kept alive by a bind mount on ``path``, as
    ``ip netns add`` does, made in this thread: unshare, bind-mount it, switch back (no
    ``unshare`` process: ≈ 4 ms less per container)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # libc is already loaded: no ldconfig lookup
    with open(path, "x"):
        pass
    old = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET): "
                          + os.strerror(ctypes.get_errno()))
        try:
            if libc.mount(b"/proc/thread-self/ns/net", os.fsencode(path), None, MS_BIND,
                          None) != 0:
                raise OSError(ctypes.get_errno(), "bind mount of the namespace: "
                              + os.strerror(ctypes.get_errno()))
        finally:
            if libc.setns(old, CLONE_NEWNET) != 0:  # back to the host's network, always
                raise NetworkError("cannot return to the host's network namespace: "
                                   + os.strerror(ctypes.get_errno()))
    finally:
        os.close(old)


def _make_netns_in(path: str, userns: str) -> None:
    """As :func:`_make_netns`, the namespace owned by the user namespace at ``userns``: a
    child joins it (only a single-threaded process may) and unshares; we bind-mount it."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    with open(path, "x"):
        pass
    ufd = os.open(userns, os.O_RDONLY | os.O_CLOEXEC)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only joins, unshares and waits
        try:
            os.close(go_w)
            ok = libc.setns(ufd, 0x10000000) == 0 and libc.unshare(CLONE_NEWNET) == 0
            os.write(ready_w, b"1" if ok else b"0")
            os.read(go_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(go_r)
    os.close(ufd)
    try:
        if os.read(ready_r, 1) != b"1":
            raise NetworkError("cannot create a network namespace in the TD's user namespace")
        if libc.mount(f"/proc/{pid}/ns/net".encode(), os.fsencode(path), None, MS_BIND,
                      None) != 0:
            raise OSError(ctypes.get_errno(), "bind mount of the namespace: "
                          + os.strerror(ctypes.get_errno()))
    finally:
        os.close(go_w)
        os.close(ready_r)
        os.waitpid(pid, 0)


def teardown(run_dir: str, cid: str) -> None:
    """Stop the container's pasta and remove its namespace; idempotent."""
    netns = netns_path(run_dir, cid)
    pid_file = netns + PASTA_PID
    try:
        with open(pid_file, "rb") as f:
            pid = int(f.read().strip() or b"0")
    except (OSError, ValueError):
        pid = 0
    if pid > 0 and _is_pasta_for(pid, netns):
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass
        try:  # as a child subreaper, the daemonized pasta may be ours to reap
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    for p in (pid_file,):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    if os.path.exists(netns):
        from arca.host.images.mount import umount

        umount(netns, lazy=True)
        try:
            os.unlink(netns)
        except FileNotFoundError:
            pass


def _is_pasta_for(pid: int, netns: str) -> bool:
    """Is ``pid`` still the pasta serving ``netns`` (not a recycled pid)?"""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return os.fsencode(netns) in f.read().split(b"\0")
    except OSError:
        return False
