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
4. Run the agent (forked: no second interpreter) chrooted in the new root, its output on the
   ``arca.stdout``/``arca.stderr`` ports (or a guest terminal's, ``-t``). Relay its evidence
   requests (a unix socket where ``sim`` has its device), the host's ``start`` (the ``go``
   FIFO), stdin, window size and signals; run the execs the TD's measured policy allows
   (ADR 0040); report the workload's exit status and power off.

A failure before the agent runs goes to the host as exit status 125 (printed as one line).
Only the standard library: device-mapper is driven with its ioctls (``linux/dm-ioctl.h``);
busybox does what the standard library cannot (insmod, mount, poweroff).
"""

from __future__ import annotations

import binascii
import fcntl
import json
import os
import select
import socket
import stat
import struct
import sys
import time

from arca.guest.boundary import volume_refusal
from arca.guest.policy import host_process
from arca.wire.constants import EVIDENCE_PATH
from arca.wire.descriptor import LaunchDescriptor
from arca.wire.errors import ArcaError, PolicyDenied
from arca.wire.initdata import ExecPolicy, InitData
from arca.wire.jcs import canonicalize
from arca.wire.tees import CONFIGFS_TSM, TEES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
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


def sh(*args: str, on: int = -1) -> None:
    # posix_spawn (vfork), not fork: copying this interpreter's page tables cost ~12 ms a call
    # under TCG. ``on``: the last argument is what it holds open, whatever path led to it.
    if on >= 0:
        os.set_inheritable(on, True)
    pid = os.posix_spawn(BB, [BB, *args, *([f"/proc/self/fd/{on}"] if on >= 0 else [])], {})
    if on >= 0:
        os.set_inheritable(on, False)
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


def write_all(fd: int, data: bytes) -> None:
    while data:  # a virtio-serial port takes at most 32 KiB per write
        data = data[os.write(fd, data):]


def modules(optional: bool) -> None:
    """insmod the initramfs's modules in order: the plain ones, or those marked "?" (the
    configfs-tsm stack of tdx/snp guests: each TEE's driver fails elsewhere, which is fine)."""
    with open("/lib/modules/order") as f:
        for m in f.read().split():
            if m.startswith("?") == optional:
                try:
                    sh("insmod", f"/lib/modules/{m.lstrip('?')}")
                except OSError:
                    if not optional:
                        raise


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
    """JSON lines over the control port: replies in request order, events any time."""

    def __init__(self, path: str) -> None:
        self.fd, self.buf = os.open(path, os.O_RDWR), b""
        self.events: list[dict[str, Any]] = []

    def send(self, obj: object) -> None:
        write_all(self.fd, json.dumps(obj).encode() + b"\n")

    def read(self) -> list[dict[str, Any]]:
        self.buf += os.read(self.fd, 65536)
        *lines, self.buf = self.buf.split(b"\n")
        out: list[dict[str, Any]] = []
        for line in lines:
            msg = json.loads(line)
            (self.events if "id" in msg else out).append(msg)
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


def volume(tag: str, destination: str, readonly: bool, policy: ExecPolicy, file: bool) -> None:
    """A host directory or file (virtio-fs: untrusted data) at ``destination``, only where the
    measured init-data's policy allows, never over the image, the guest runtime or /run/arca.
    Checked here, before the agent runs: the host's own check at create may have been skipped.
    The agent's report binds that init-data, so a host lying about it gets no secret either."""
    dest = os.path.normpath("/" + destination.lstrip("/"))
    why = volume_refusal(NEW, dest, policy)
    if why is not None:
        raise PolicyDenied(f"volume {tag} at {destination} refused: {why}", field="mounts")
    # Below another volume the path is the host's: it can swap a directory checked above for a
    # link before the mount, and a link resolves from this PID 1's root (the initramfs, which
    # the agent never sees). So walk to the mount point never following a link (ADR 0060) and
    # mount on what we hold open.
    parts = dest.strip("/").split("/")
    at = walk(tag, destination, parts[:-1] if file else parts)
    opts = ("ro" if readonly else "rw") + ",nosuid,nodev"
    try:
        if not file:
            sh("mount", "-t", "virtiofs", "-o", opts, tag, on=at)
            return
        # A file's share: outside the TD's root, named by the host's tag in hex (no "..", "/").
        share = f"/vol/{tag.encode().hex()}"
        os.makedirs(share, exist_ok=True)
        sh("mount", "-t", "virtiofs", "-o", opts, tag, share)
        try:  # its one entry ``file``, bound (flags and all) where the policy allows it
            point = os.open(parts[-1], os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644, dir_fd=at)
        except OSError as e:
            raise PolicyDenied(f"volume {tag} at {destination} refused: its mount point is a "
                               f"symbolic link ({e.strerror})", field="mounts") from None
        sh("mount", "--bind", share + "/file", on=point)  # (failing: PID 1 powers off)
        os.close(point)
        # The host serves that share: by now ``file`` may be a symlink the bind followed
        # into the TD (a secret, the image): only a regular file of the share may stay.
        got = os.stat(parts[-1], dir_fd=at, follow_symlinks=False)
        if not stat.S_ISREG(got.st_mode) or got.st_dev != os.stat(share).st_dev:
            raise PolicyDenied(f"volume {tag} at {destination} refused: the host's file is not "
                               "a regular file of its share", field="mounts")
    finally:
        os.close(at)


def walk(tag: str, destination: str, parts: list[str]) -> int:
    # A descriptor of the directory NEW/parts, each made if missing and reached without
    # following a link; else the volume is refused, naming it.
    fd = os.open(NEW, os.O_RDONLY | os.O_DIRECTORY)
    for part in parts:
        try:
            try:  # (not listdir first: a share's directory may be huge)
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            fd, old = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd), fd
        except OSError as e:  # a link (ELOOP), a file, or the host changing it meanwhile
            os.close(fd)
            raise PolicyDenied(f"volume {tag} at {destination} refused: {part} is a symbolic "
                               f"link or not a directory ({e.strerror})", field="mounts") from None
        os.close(old)
    return fd


def setup(host: Host) -> dict[str, Any]:
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
    # The agent's view. In this order (/dev first).
    for where, *how in (("/.arca", "-o", "bind,ro", "/.arca"), ("/proc", "-t", "proc", "proc"),
                        ("/dev", "-t", "devtmpfs", "dev"), ("/dev/pts", "-t", "devpts", "-o",
                                                           "newinstance,ptmxmode=0666,mode=0620",
                                                           "devpts"),
                        ("/run/arca", "-t", "tmpfs", "-o", "mode=0755", "tmpfs")):
        os.makedirs(NEW + where, exist_ok=True)
        sh("mount", *how, NEW + where)
    os.mkdir(TEE_DIR, 0o755)
    log("rootfs verified and mounted")
    inputs = host.call({"op": "inputs"})
    desc = inputs["descriptor"].encode()
    descriptor = LaunchDescriptor.from_bytes(desc)
    if descriptor.measurement().hex() != args.get("arca.desc"):
        raise ValueError("descriptor.json is not the measured descriptor (arca.desc)")
    if descriptor.tee in TEES and TEES[descriptor.tee].source == CONFIGFS_TSM:  # tdx, snp
        modules(optional=True)
        os.makedirs(NEW + "/sys/kernel/config", exist_ok=True)
        sh("mount", "-t", "configfs", "configfs", NEW + "/sys/kernel/config")
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
    init = inputs.get("init_data")
    policy = InitData.parse(init.encode()).policy if init is not None else ExecPolicy()
    for v in inputs.get("volumes") or []:
        volume(str(v["tag"]), str(v["destination"]), bool(v["readonly"]), policy,
               bool(v.get("file")))
    os.makedirs(NEW + "/etc", exist_ok=True)
    network()
    log("network up")
    return inputs


def terminal(size: list[int]) -> tuple[int, int]:
    """(master, slave) of a guest pseudo-terminal of ``size`` [rows, cols] (``-t``)."""
    master = os.open(NEW + "/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    n = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, bytes(4)))[0]
    slave = os.open(f"{NEW}/dev/pts/{n}", os.O_RDWR | os.O_NOCTTY)
    fcntl.ioctl(slave, TIOCSWINSZ, struct.pack("HHHH", int(size[0]), int(size[1]), 0, 0))
    return master, slave


# A process of the TD (id 0: the agent, then the workload; others: execs). The host's stdin
# for it goes to ``stdin`` (a pipe, or the terminal's master); ``outs`` (fd -> 1|2) are read
# and relayed to the host.
class Proc:
    def __init__(self, pid: int, stdin: int, outs: dict[int, int], tty: bool) -> None:
        self.pid, self.pidfd, self.stdin, self.outs = pid, os.pidfd_open(pid), stdin, outs
        self.tty, self.pending = tty, b""
        os.set_blocking(stdin, False)  # a workload not reading its stdin must not stop us


def spawn(run: Callable[[], None], size: list[int] | None, out: int = -1, err: int = -1
          ) -> Proc:
    # Fork ``run`` chrooted in the new root, in its own session, on a terminal of ``size`` or
    # on pipes (stdout/stderr: ``out``/``err`` when given: the ports, read by the host).
    if size:
        master, slave = terminal(size)
        stdin, child, outs = master, [slave] * 3, {master: 1}
    else:
        r, stdin = os.pipe()
        child, outs = [r, out, err], {}
        for n in (1, 2):
            if child[n] < 0:
                rd, child[n] = os.pipe()
                outs[rd] = n
    pid = os.fork()
    if pid == 0:
        try:  # as runc: a session, the terminal as controlling terminal
            os.setsid()
            if size:
                fcntl.ioctl(slave, TIOCSCTTY, 0)
            for n, fd in enumerate(child):
                os.dup2(fd, n)
            os.chroot(NEW)
            os.chdir("/")
            run()
        except BaseException as e:  # noqa: BLE001 - said on its stderr, as a shell would
            print(f"arca-vminit: error: {e}", file=sys.stderr, flush=True)
            os._exit(127 if isinstance(e, FileNotFoundError) else 126)
    for fd in set(child) - {out, err}:
        os.close(fd)
    return Proc(pid, stdin, outs, bool(size))


def run_agent() -> None:
    # The agent in this forked interpreter, not a second one: under TCG a new interpreter and
    # the imports both need cost ~0.5 s (docs/vm.md "Performance"). /.arca is the same tree in
    # the new root; the environment (the kernel's HOME and TERM) is not the workload's, which
    # the agent builds from process.json. Never back into PID 1's code: the agent's status
    # (126/127: the workload cannot run) ends this process here.
    from arca.guest.agent import main as agent_main

    try:
        code = agent_main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def require_allow_exec(what: str, init_data: str | None) -> None:
    # The host is not trusted to have applied the policy: an exec (or a process listing, which
    # an exec could make) only once the agent has checked that the evidence binds the
    # init-data we hold (then it wrote ``evidence.json``), and if that policy sets allow_exec.
    if not os.path.exists(NEW + EVIDENCE_PATH):
        raise PolicyDenied(f"{what} refused in the TD: its workload has not started")
    if init_data is None or not InitData.parse(init_data.encode()).policy.allow_exec:
        raise PolicyDenied(f"{what} refused in the TD: its measured execution policy does not "
                           "set allow_exec")


def processes() -> bytes:
    # The TD's processes as its kernel sees them (``arca top``; ADR 0057), as JSON: not PID 1
    # (this runtime) nor kernel threads (no command line); user names from the TD's passwd.
    users: dict[str, str] = {}
    if os.path.isfile(NEW + "/etc/passwd"):
        with open(NEW + "/etc/passwd", encoding="utf-8", errors="replace") as f:
            users = {u[2]: u[0] for u in (ln.split(":") for ln in f) if len(u) > 2}
    out = []
    for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit() and p != "1"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read().rpartition(b")")[2].split()  # state ppid ... utime stime
            uid = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            continue  # exited meanwhile
        if cmd:
            out.append({"pid": pid, "ppid": int(stat[1]), "uid": uid, "command": cmd,
                        "user": users.get(str(uid), str(uid)),
                        "cpu_s": (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")})
    return json.dumps(out).encode()


def start_exec(request: dict[str, Any], init_data: str | None) -> Proc:
    # An exec the host asks for, if the TD's measured policy allows it.
    from arca.guest.agent import become_workload

    require_allow_exec("exec", init_data)
    spec = host_process(request["exec"])

    def run() -> None:
        become_workload(spec)
        os.execvpe(spec.args[0], list(spec.args),  # noqa: S606 - no shell, by design
                   dict(e.partition("=")[::2] for e in spec.env))
    return spawn(run, request.get("terminal"))


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


def pump(host: Host, i: int, p: Proc, fd: int, out: int) -> None:
    """Output of process ``i`` to the host (the workload's terminal: the stdout port)."""
    try:
        data = os.read(fd, 65536)
    except OSError:  # EIO: the last holder of the terminal is gone
        data = b""
    if not data:
        del p.outs[fd]
        if fd != p.stdin:
            os.close(fd)
    elif i == 0:
        write_all(out, data)
    else:
        host.send({"op": "out", "id": i, "fd": p.outs[fd],
                   "data": binascii.b2a_base64(data, newline=False).decode()})


def event(host: Host, procs: dict[int, Proc], e: dict[str, Any], init_data: str | None
          ) -> None:
    # From the host for process ``id``: exec, process listing (answered as an exec's output),
    # signal, window size, stdin (``""``: EOF). The host sends more stdin only after our
    # ``read`` (so it never piles up in guest RAM).
    p = procs.get(i := int(e["id"]))
    if ("exec" in e or "ps" in e) and i not in procs:
        try:
            if "exec" in e:
                procs[i] = start_exec(e, init_data)
                return
            require_allow_exec("process listing", init_data)
            host.send({"op": "out", "id": i, "fd": 1,
                       "data": binascii.b2a_base64(processes(), newline=False).decode()})
            host.send({"op": "exit", "id": i, "status": 0})
        except (ArcaError, OSError, ValueError) as x:
            host.send({"op": "exit", "id": i, "status": 126, "error": str(x)})
    elif p is None:
        return
    elif "signal" in e:
        os.kill(p.pid, int(e["signal"]))
    elif "winch" in e and p.tty:  # the kernel sends SIGWINCH to its foreground
        fcntl.ioctl(p.stdin, TIOCSWINSZ, struct.pack("HHHH", *map(int, e["winch"]), 0, 0))
    elif e.get("data"):
        p.pending += binascii.a2b_base64(e["data"])
    elif "data" in e and not p.tty and p.stdin >= 0:
        os.close(p.stdin)  # end of file
        p.stdin = -1


def supervise(host: Host, agent: Callable[[], Proc], relay_port: int, out: int,
              init_data: str | None) -> int:
    """Relay evidence, ``go``, processes' I/O, signals, execs; the workload's exit status."""
    ev = socket.socket(socket.AF_UNIX)
    ev.bind(f"{TEE_DIR}/sim.sock")
    ev.listen(4)
    relay = Relay(relay_port) if relay_port else None
    procs = {0: agent()}  # only now: the forked agent asks for evidence at once
    log("agent started")
    go = False
    waiting: list[socket.socket] = []
    host.send({"op": "go"})
    while True:
        for e in host.events:
            event(host, procs, e, init_data)
        host.events.clear()
        if go:
            try:
                fd = os.open(f"{TEE_DIR}/go", os.O_WRONLY | os.O_NONBLOCK)
                os.write(fd, b"1")
                os.close(fd)
                go = False
            except OSError:
                pass  # the agent has not opened it yet (ENXIO): retried every 10 ms
        fds: list[Any] = [host.fd, ev, *(relay.fds() if relay else [])]
        for p in procs.values():
            fds += [p.pidfd, *p.outs]
        ready, writable, _ = select.select(fds, [p.stdin for p in procs.values() if p.pending],
                                           [], 0.01 if go else None)
        for s in ready:
            if relay and (s is relay.listener or s in relay.peer):
                relay.ready(s)
        for i, p in list(procs.items()):
            if p.stdin in writable:
                try:
                    p.pending = p.pending[os.write(p.stdin, p.pending):]
                except OSError:  # EPIPE: nobody reads it any more
                    p.pending = b""
                if not p.pending:
                    host.send({"op": "read", "id": i})
            for fd in [fd for fd in p.outs if fd in ready]:
                pump(host, i, p, fd, out)
            if p.pidfd not in ready:
                continue
            while p.outs and (r := select.select(list(p.outs), [], [], 0.05)[0]):
                for fd in r:
                    pump(host, i, p, fd, out)
            code = os.waitstatus_to_exitcode(os.waitpid(p.pid, 0)[1])
            status = 128 - code if code < 0 else code  # killed by a signal: as a shell says
            if i == 0:
                log(f"workload exited: {code}")
                return status
            for fd in {p.stdin, p.pidfd, *p.outs} - {-1}:
                os.close(fd)
            del procs[i]
            host.send({"op": "exit", "id": i, "status": status})
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
        log("started")  # the interpreter and its imports
        modules(optional=False)
        log("modules loaded")
        host = Host(port("arca.ctl"))
        out, err = (os.open(port(n), os.O_WRONLY) for n in ("arca.stdout", "arca.stderr"))
        inputs = setup(host)
        init_data = inputs.get("init_data")
        status = supervise(host, lambda: spawn(run_agent, inputs.get("terminal"), out, err),
                           loopback_port(init_data), out, init_data)
        host.send({"op": "exit", "status": status})
    except BaseException as e:  # noqa: BLE001 - PID 1 must not die: the kernel would panic
        log(f"{e!r}")
        try:  # the host prints it: one line naming the cause
            host.send({"op": "exit", "status": status, "error": str(e) or repr(e)})
        except Exception:  # noqa: BLE001, S110 - powering off anyway
            pass
    os.sync()
    sh("poweroff", "-f")
