"""PID 1 of a ``vm`` guest (started by the initramfs's ``/init``); docs/vm.md.

1. Mount /proc, /sys, /dev; load the initramfs's modules (``/lib/modules/order``).
2. Open the rootfs image (``/dev/vda``) through dm-verity with the root hash from the measured
   kernel command line (``arca.root=<sha256 hex>:<data blocks>``): the kernel answers EIO for any
   block that does not match. Mount it (erofs, read-only) under an overlay whose writable layer
   is a tmpfs in guest RAM; ``/run/arca`` (secrets) is another tmpfs.
3. Ask the host (``arca.ctl`` port) for the container's inputs; the descriptor must hash to
   ``arca.desc=`` on the command line (so it is measured), the process and init-data are
   checked by the agent as under ``sim``. Write the launch record of what this VM booted
   (:func:`launch_record`) for the agent, which refuses a report not over it.
4. Run the agent (forked: no second interpreter) chrooted in the new root, its stdio on the
   ``arca.stdout``/``arca.stderr`` ports. Relay its evidence requests (a unix socket where
   ``sim`` has its device) and the host's ``start`` (the ``go`` FIFO) and signals; report the
   workload's exit status and power off.

A failure before the agent runs goes to the host as exit status 125 (printed as one line).
Only the standard library: device-mapper is driven with its ioctls (``linux/dm-ioctl.h``);
busybox does what the standard library cannot (insmod, mount, poweroff).
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import socket
import struct
import sys
import time

from arca.wire.descriptor import LaunchDescriptor
from arca.wire.initdata import InitData
from arca.wire.jcs import canonicalize

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

BB = "/bin/busybox"
NEW = "/newroot"
TEE_DIR = NEW + "/run/arca/tee"
#: struct dm_ioctl (312 bytes) and struct dm_target_spec (40 bytes), linux/dm-ioctl.h.
DM_IOCTL_FMT, DM_SPEC_FMT = "=3I7IQ128s129s7x", "=QQiI16s"
DM_DEV_CREATE, DM_DEV_SUSPEND, DM_TABLE_LOAD, DM_READONLY = 3, 6, 9, 1
#: asm-generic/ioctls.h (the guest runtime has no termios module).
TIOCSCTTY, TIOCSWINSZ, TIOCGPTN, TIOCSPTLCK = 0x540E, 0x5414, 0x80045430, 0x40045431


def log(msg: str) -> None:
    """Progress on the guest console (the host's console.log): says where a VM stopped."""
    try:  # the guest's uptime, as the kernel's own lines have it: the boot's breakdown
        with open("/proc/uptime") as f:
            up = f.read().split()[0]
    except OSError:
        up = "?"
    print(f"[{up:>12}] arca-vminit: {msg}", file=sys.stderr, flush=True)


def sh(*args: str) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(BB, [BB, *args])  # noqa: S606 - no shell, by design
        finally:
            os._exit(127)
    if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0:
        raise OSError(f"{' '.join(args)} failed")


def wait_for(path: str, seconds: float = 20.0) -> str:
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise OSError(f"{path} did not appear")
        time.sleep(0.01)
    return path


def port(name: str) -> str:
    """/dev node of the virtio-serial port called ``name``."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for p in os.listdir("/sys/class/virtio-ports") if os.path.isdir(
                "/sys/class/virtio-ports") else []:
            with open(f"/sys/class/virtio-ports/{p}/name") as f:
                if f.read().strip() == name:
                    return wait_for(f"/dev/{p}")
        time.sleep(0.01)
    raise OSError(f"virtio-serial port {name} missing")


def dm_call(cmd: int, name: bytes, flags: int = 0, payload: bytes = b"", count: int = 0) -> int:
    size = struct.calcsize(DM_IOCTL_FMT)
    buf = bytearray(struct.pack(DM_IOCTL_FMT, 4, 0, 0, size + len(payload) + 4096, size, count,
                                0, flags, 0, 0, 0, name, b"") + payload + bytes(4096))
    with open("/dev/mapper/control", "rb") as ctl:
        fcntl.ioctl(ctl, (3 << 30) | (size << 16) | (0xFD << 8) | cmd, buf)
    return int(struct.unpack_from("=Q", buf, 40)[0])  # dev: the new device's number


def verity(device: str, root_hash: str, blocks: int) -> str:
    """A read-only dm-verity mapping of ``device``: data blocks, then the hash tree."""
    if len(root_hash) != 64 or blocks <= 0:
        raise ValueError("malformed arca.root on the kernel command line")
    bytes.fromhex(root_hash)
    params = (f"1 {device} {device} 4096 4096 {blocks} {blocks} sha256 {root_hash} -"
              ).encode() + b"\0"
    params += bytes(-len(params) % 8)
    spec = struct.pack(DM_SPEC_FMT, 0, blocks * 8, 0, 0, b"verity") + params
    dm_call(DM_DEV_CREATE, b"arca-root")
    dm_call(DM_TABLE_LOAD, b"arca-root", DM_READONLY, spec, count=1)
    dev = dm_call(DM_DEV_SUSPEND, b"arca-root")  # without DM_SUSPEND_FLAG: resume
    return wait_for(f"/dev/dm-{os.minor(dev)}")


class Host:
    """JSON lines over the control port; replies come in request order, signals any time."""

    def __init__(self, path: str) -> None:
        self.fd, self.buf = os.open(path, os.O_RDWR), b""
        self.signals: list[int] = []

    def send(self, obj: object) -> None:
        os.write(self.fd, json.dumps(obj).encode() + b"\n")

    def read(self) -> list[dict[str, Any]]:
        self.buf += os.read(self.fd, 65536)
        *lines, self.buf = self.buf.split(b"\n")
        out = []
        for line in lines:
            msg = json.loads(line)
            if "signal" in msg:
                self.signals.append(int(msg["signal"]))
            else:
                out.append(msg)
        return out

    def call(self, obj: object) -> dict[str, Any]:
        self.send(obj)
        while not (replies := self.read()):
            pass
        return replies[0]


def network() -> None:
    """QEMU's user-mode network: fixed addresses (no DHCP client needed)."""
    wait_for("/sys/class/net/eth0")  # virtio-net probes after insmod returns
    for args in (("link", "set", "lo", "up"), ("link", "set", "eth0", "up"),
                 ("addr", "add", "10.0.2.15/24", "dev", "eth0"),
                 ("route", "add", "default", "via", "10.0.2.2")):
        sh("ip", *args)
    with open(NEW + "/etc/resolv.conf", "w") as f:
        f.write("nameserver 10.0.2.3\n")


def loopback_port(init_data: str | None) -> int:
    """The KBS port (else 0) when init-data names a broker on loopback: the guest's 127.0.0.1
    is relayed to the container's (10.0.2.2), so one measured init-data serves sim and vm."""
    if init_data is None:
        return 0
    from urllib.parse import urlsplit

    url = InitData.parse(init_data.encode()).kbs_url
    parts = urlsplit(url or "")
    if parts.hostname not in ("127.0.0.1", "localhost"):
        return 0
    return parts.port or (443 if parts.scheme == "https" else 80)


def launch_record(tee: str, cmdline: str, vcpus: int, kernel: str, initrd: str) -> bytes:
    """The launch record (``arca.host.backends.vm.launch``) with this guest's own command line
    and vCPUs. Kernel/initramfs digests are the host's word: enough, since a report signed over
    another command line or vCPU count matches only by a SHA-384 collision (JCS is injective)."""
    return canonicalize({"version": 1, "tee": tee, "machine": "microvm", "vcpus": vcpus,
                         "kernel": kernel, "initrd": initrd, "cmdline": cmdline})


def setup(host: Host) -> tuple[int, list[int] | None]:
    with open("/proc/cmdline") as f:  # QEMU's -append verbatim; the kernel adds the newline
        cmdline = f.read().removesuffix("\n")
    args = dict(a.partition("=")[::2] for a in cmdline.split())
    root_hash, _, blocks = args.get("arca.root", "").partition(":")
    dm = verity(wait_for("/dev/vda"), root_hash, int(blocks or 0))
    try:
        sh("mount", "-t", "erofs", "-o", "ro", dm, "/lower")
    except OSError:  # the kernel read a block whose hash is not in the measured tree
        raise OSError("the rootfs image does not match its measured dm-verity root hash "
                      "(mount failed)") from None
    sh("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/rw")
    os.mkdir("/rw/upper", 0o755)
    os.mkdir("/rw/work", 0o755)
    sh("mount", "-t", "overlay", "-o", "lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work",
       "overlay", NEW)
    # The agent's view; configfs: tdx/snp evidence (configfs-tsm). In this order (/dev first).
    for where, *how in (("/.arca", "-o", "bind,ro", "/.arca"), ("/proc", "-t", "proc", "proc"),
                        ("/dev", "-t", "devtmpfs", "dev"), ("/dev/pts", "-t", "devpts", "-o",
                                                           "newinstance,ptmxmode=0666,mode=0620",
                                                           "devpts"),
                        ("/run/arca", "-t", "tmpfs", "-o", "mode=0755", "tmpfs"),
                        ("/sys/kernel/config", "-t", "configfs", "configfs")):
        os.makedirs(NEW + where, exist_ok=True)
        sh("mount", *how, NEW + where)
    os.mkdir(TEE_DIR, 0o755)
    log("rootfs verified and mounted")
    inputs = host.call({"op": "inputs"})
    desc = inputs["descriptor"].encode()
    descriptor = LaunchDescriptor.from_bytes(desc)
    if descriptor.measurement().hex() != args.get("arca.desc"):
        raise ValueError("descriptor.json is not the measured descriptor (arca.desc)")
    record = launch_record(descriptor.tee, cmdline, os.cpu_count() or 0,
                           str(inputs.get("kernel")), str(inputs.get("initrd")))
    files = {"descriptor.json": desc, "process.json": inputs["process"].encode(),
             "launch-record.json": record}
    if inputs.get("init_data") is not None:
        files["init-data.toml"] = inputs["init_data"].encode()
    for name, data in files.items():
        with open(f"{TEE_DIR}/{name}", "wb") as f:
            f.write(data)
    os.mkfifo(f"{TEE_DIR}/go", 0o600)
    os.makedirs(NEW + "/etc", exist_ok=True)
    network()
    log("network up")
    return loopback_port(inputs.get("init_data")), inputs.get("terminal")


def terminal(size: list[int]) -> tuple[int, int]:
    """(master, slave) of a guest pseudo-terminal of ``size`` [rows, cols] (``-t``)."""
    master = os.open(NEW + "/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    n = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, bytes(4)))[0]
    slave = os.open(f"{NEW}/dev/pts/{n}", os.O_RDWR | os.O_NOCTTY)
    fcntl.ioctl(slave, TIOCSWINSZ, struct.pack("HHHH", int(size[0]), int(size[1]), 0, 0))
    return master, slave


def agent(out: str, err: str, size: list[int] | None = None) -> tuple[int, int | None]:
    master, slave = terminal(size) if size else (None, None)
    pid = os.fork()
    if pid == 0:
        try:
            if slave is not None:  # the workload's controlling terminal, as runc gives it
                os.setsid()
                fcntl.ioctl(slave, TIOCSCTTY, 0)
                for fd in (0, 1, 2):
                    os.dup2(slave, fd)
            else:
                os.dup2(os.open(out, os.O_RDWR), 0)
                os.dup2(0, 1)
                os.dup2(os.open(err, os.O_WRONLY), 2)
            os.chroot(NEW)
            os.chdir("/")
            # The agent in this forked interpreter, not a second one: under TCG a new
            # interpreter and the imports both need cost ~0.5 s (docs/vm.md "Performance").
            # /.arca is the same tree in the new root; the environment (the kernel's HOME and
            # TERM) is not the workload's, which the agent builds from process.json.
            from arca.guest.agent import main as agent_main

            sys.exit(agent_main())
        except SystemExit as e:  # the agent's status (126/127: the workload cannot run)
            os._exit(int(e.code or 0))
        finally:  # never back into PID 1's code (an uncaught bug in the agent: 127)
            os._exit(127)
    if slave is not None:
        os.close(slave)
    return pid, master


class Relay:
    """TCP from the guest's 127.0.0.1:port to the container's (10.0.2.2:port)."""

    def __init__(self, port: int) -> None:
        self.port, self.peer = port, {}  # type: ignore[var-annotated]
        self.listener = socket.create_server(("127.0.0.1", port))

    def fds(self) -> list[socket.socket]:
        return [self.listener, *self.peer]

    def ready(self, s: socket.socket) -> None:
        if s is self.listener:
            inside = self.listener.accept()[0]
            outside = socket.create_connection(("10.0.2.2", self.port), timeout=10)
            outside.settimeout(None)
            self.peer[inside], self.peer[outside] = outside, inside
            return
        try:
            data = s.recv(65536)
            if data:
                self.peer[s].sendall(data)
                return
        except OSError:
            pass
        other = self.peer.pop(s)
        self.peer.pop(other, None)
        s.close()
        other.close()


def copy_terminal(master: int, out: int) -> bool:
    """The terminal's output to the stdout port; False once the terminal is closed."""
    try:
        data = os.read(master, 65536)
    except OSError:  # EIO: the last holder of the terminal is gone
        data = b""
    if data:
        os.write(out, data)
    return bool(data)


def supervise(host: Host, started: tuple[int, int | None], relay_port: int, out: str) -> int:
    """Relay evidence, ``go``, signals (and the loopback KBS); the workload's exit status."""
    ev = socket.socket(socket.AF_UNIX)
    ev.bind(f"{TEE_DIR}/sim.sock")
    ev.listen(4)
    relay = Relay(relay_port) if relay_port else None
    pid, master = started
    out_fd = os.open(out, os.O_WRONLY) if master is not None else -1
    log("agent started")
    pidfd, go = os.pidfd_open(pid), False
    waiting: list[socket.socket] = []
    host.send({"op": "go"})
    while True:
        for sig in host.signals:
            os.kill(pid, sig)
        host.signals.clear()
        if go:
            try:
                fd = os.open(f"{TEE_DIR}/go", os.O_WRONLY | os.O_NONBLOCK)
                os.write(fd, b"1")
                os.close(fd)
                go = False
            except OSError:
                pass  # the agent has not opened it yet (ENXIO): retried every 10 ms
        fds: list[Any] = [host.fd, ev, pidfd, *(relay.fds() if relay else []),
                          *([master] if master is not None else [])]
        ready = select.select(fds, [], [], 0.01 if go else None)[0]
        for s in ready:
            if relay and (s is relay.listener or s in relay.peer):
                relay.ready(s)
        if master is not None and master in ready and not copy_terminal(master, out_fd):
            master = None
        if pidfd in ready:
            while master is not None and select.select([master], [], [], 0.05)[0] and \
                    copy_terminal(master, out_fd):
                pass
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            log(f"workload exited: {code}")
            return 128 - code if code < 0 else code  # killed by a signal: as a shell says
        if ev in ready:
            conn = ev.accept()[0]
            log("evidence requested")
            conn.settimeout(5)
            host.send({"op": "evidence", "request": conn.recv(4096).decode()})
            waiting.append(conn)
        if host.fd in ready:
            for reply in host.read():
                if reply.get("op") == "go":
                    log("released by the host")
                    go = True
                elif waiting:
                    conn = waiting.pop(0)
                    conn.sendall(reply["answer"].encode())
                    conn.close()


def main() -> None:
    status = 125
    try:
        for fs, where in (("proc", "/proc"), ("sysfs", "/sys"), ("devtmpfs", "/dev")):
            sh("mount", "-t", fs, fs, where)
        with open("/lib/modules/order") as f:
            for m in f.read().split():
                try:
                    sh("insmod", f"/lib/modules/{m.lstrip('?')}")
                except OSError:
                    if not m.startswith("?"):  # "?": a TEE's driver, absent elsewhere
                        raise
        sh("mount", "-t", "configfs", "configfs", "/sys/kernel/config")
        log("modules loaded")
        host = Host(port("arca.ctl"))
        out, err = port("arca.stdout"), port("arca.stderr")
        relay_port, size = setup(host)
        status = supervise(host, agent(out, err, size), relay_port, out)
        host.send({"op": "exit", "status": status})
    except BaseException as e:  # noqa: BLE001 - PID 1 must not die: the kernel would panic
        log(f"{e!r}")
        try:  # the host prints it: one line naming the cause
            host.send({"op": "exit", "status": status, "error": str(e) or repr(e)})
        except Exception:  # noqa: BLE001, S110 - powering off anyway
            pass
    os.sync()
    sh("poweroff", "-f")
