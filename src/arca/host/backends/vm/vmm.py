"""The process of a ``vm`` container (runc starts it, in the container's namespaces and cgroups):
it starts the volumes' virtiofsd (ADR 0042) and QEMU with the argument vectors the runtime
wrote (``launch.json`` in the TD directory, mounted at ``/run/arca-vm``) and serves the guest's
control port until the VM stops.

Host code, outside the TCB; a single standard-library file, run as ``python3 -I -S vmm.py``
with the host's interpreter (``/usr`` is bind-mounted read-only into the container).

The control port carries JSON lines. Guest -> host: ``{"op": "inputs"}`` (answered with the
host-supplied descriptor, process, init-data, the kernel and initramfs digests of the launch
record and the volumes (tag, destination, read-only): untrusted, checked in the guest),
``{"op": "evidence", "request": LINE}`` (relayed to the sim platform's per-TD socket, which
signs the report over the launch measurement it computed), ``{"op": "go"}`` (answered when the
runtime's ``start`` writes the ``go`` FIFO), ``{"op": "exit", "status": N}``. Host -> guest:
replies in request order, and *events* for a process of the TD any time (ADR 0040): ``id`` 0
is the workload, others are execs. ``{"id": I, "signal": N}`` (the signals this process
receives: ``ctr task kill``/``arca stop``), ``{"id": I, "data": BASE64}`` (stdin; ``""``: end
of file; the next chunk only after the guest's ``{"op": "read", "id": I}``),
``{"id": I, "winch": [ROWS, COLS]}`` (``-t``: this terminal was resized),
``{"id": I, "exec": PROCESS, "terminal": [ROWS, COLS] | null}`` (an exec, which the guest
checks against the TD's measured policy); the guest answers an exec with
``{"op": "out", "id": I, "fd": 1|2, "data": BASE64}`` and ``{"op": "exit", "id": I,
"status": N[, "error": MESSAGE]}``.

Execs reach the VMM on ``EXEC_SOCKET`` from ``vmm.py exec PROCESS`` (:func:`exec_client`),
which ``arca-runtime exec`` has ``runc exec`` start in this container in place of the
requested process: nothing the host asks for ever runs in this (host-side) container.

Exit status: the workload's, as the guest reported it; otherwise 125 with one line naming the
cause (QEMU failed, the guest panicked or never reported, ...) and the console's last lines.
"""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

TD = "/run/arca-vm"
#: Where the VMM takes exec requests (``vmm.py exec``, started by ``runc exec`` in this
#: container); in the VMM's private scratch tmpfs (``launch.IN_CONTAINER_SCRATCH``).
EXEC_SOCKET = "/run/vmm/exec.sock"
STDIN_CHUNK = 32768
#: A guest that has not asked for its inputs this long after QEMU started is considered dead
#: (boot takes ~5 s under TCG on one busy core; the bound only catches a wedged VM).
BOOT_TIMEOUT_S = float(os.environ.get("ARCA_VM_BOOT_TIMEOUT", "120"))


#: The volumes' virtiofsd processes (:func:`start_virtiofsd`): each exits when QEMU does.
DAEMONS: list[subprocess.Popen[bytes]] = []


def fail(message: str, qemu: subprocess.Popen[bytes] | None = None) -> int:
    for p in ([qemu] if qemu is not None else []) + DAEMONS:
        if p.poll() is None:
            p.kill()
            p.wait()
    tail = ""
    try:
        with open(f"{TD}/console.log", "rb") as f:
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        # A panic's cause is its "Kernel panic" line, not the trace lines printed after it.
        panic = [ln for ln in lines if "Kernel panic" in ln]
        if lines:
            tail = f" (guest console: {(panic or lines)[-1].strip()[:300]})"
    except OSError:
        pass
    print(f"arca-vm: error: {message}{tail}", file=sys.stderr, flush=True)
    return 125


def read(name: str) -> str | None:
    try:
        with open(f"{TD}/{name}", encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def terminal_size() -> list[int] | None:
    """[rows, cols] of the container's terminal (runc's console with ``-t``), else None: the
    guest then gives the workload a terminal of that size."""
    import fcntl
    import struct
    import termios

    try:
        rows, cols = struct.unpack("HHHH", fcntl.ioctl(1, termios.TIOCGWINSZ, bytes(8)))[:2]
    except OSError:
        return None
    return [rows, cols]


def relay_evidence(request: str) -> str:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.settimeout(30)
        s.connect(f"{TD}/sim.sock")
        s.sendall(request.encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks).decode()
    except OSError as e:
        return json.dumps({"error": f"sim platform unreachable: {e}"}) + "\n"
    finally:
        s.close()


def start_virtiofsd(argvs: list[list[str]]) -> None:
    """One virtiofsd per volume (ADR 0042). Its socket is made listening here and handed over
    (``--fd``): QEMU connects right after, and a socket virtiofsd had bound but not yet
    listened on would refuse it. Its log (errors only) goes beside the socket."""
    for argv in argvs:
        i = argv.index("--socket-path")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(argv[i + 1])
        sock.listen(1)
        with open(argv[i + 1] + ".log", "wb") as log:
            DAEMONS.append(subprocess.Popen(
                [*argv[:i], "--fd", str(sock.fileno()), *argv[i + 2:]], stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, pass_fds=[sock.fileno()]))
        sock.close()
        time.sleep(0.05)
        if DAEMONS[-1].poll() is not None:
            with open(argv[i + 1] + ".log", "rb") as f:
                why = f.read().decode(errors="replace").strip().splitlines()[-1:]
            raise OSError(f"virtiofsd for volume {argv[argv.index('--shared-dir') + 1]} "
                          f"exited: {why[0] if why else DAEMONS[-1].returncode}")


class Lines:
    """JSON lines over a stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def send(self, obj: object) -> None:
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def recv(self) -> list[dict[str, Any]] | None:
        """The complete lines that arrived; ``None`` at end of stream."""
        data = self.sock.recv(65536)
        if not data:
            return None
        *lines, self.buf = (self.buf + data).split(b"\n")
        return [json.loads(line) for line in lines]


def read_stdin(fd: int) -> str:
    """One chunk of ``fd`` as base64 (``""``: end of file, also for a terminal hung up)."""
    try:
        data = os.read(fd, STDIN_CHUNK)
    except OSError:
        data = b""
    return base64.b64encode(data).decode()


def raw_terminal(fd: int) -> None:
    """The guest's terminal does the line discipline (echo, ^C, CR/LF): this one passes bytes
    through unchanged, or every typed key would echo twice and every newline gain a CR."""
    import tty

    tty.setraw(fd)


def release_boot_images(pid: int) -> None:
    """Page QEMU's mappings of the initramfs and kernel files out of its resident memory once
    the guest runs.

    QEMU keeps both files mapped (firmware config and ROM images, to boot again after a
    reset, which ``-no-reboot`` rules out): ~90 MiB of the VMM's RSS for nothing once the
    guest has booted. ``MADV_PAGEOUT`` of a clean, read-only file mapping only drops the pages
    (QEMU would read them back from the file); pages another process maps too (another VM's
    QEMU) stay, so the next VM reads them from disk only when no VM is running. Best effort:
    without CAP_SYS_NICE or on an old kernel QEMU keeps them (docs/vm.md "Performance")."""
    import ctypes

    ranges: list[int] = []
    try:  # a QEMU that just exited has no mappings (or no /proc entry): nothing to do
        with open(f"/proc/{pid}/maps", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 5 and fields[5] in ("/arca-vm/initrd", "/arca-vm/vmlinux"):
                    lo, hi = (int(x, 16) for x in fields[0].split("-"))
                    ranges += [lo, hi - lo]
        if not ranges:
            return
        iov = (ctypes.c_size_t * len(ranges))(*ranges)  # struct iovec {base, len} pairs
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:  # process_madvise(pidfd, iov, n, MADV_PAGEOUT, 0): 440 and 21 on every Linux arch
        ctypes.CDLL(None, use_errno=True).syscall(440, fd, iov, len(ranges) // 2, 21, 0)
    finally:
        os.close(fd)


def main() -> int:
    with open(f"{TD}/launch.json", encoding="utf-8") as f:
        launch = json.load(f)
    argv = launch["argv"]
    scratch = os.path.dirname(argv[argv.index("-chardev") + 1].split("path=")[1])
    ctl_path = os.path.join(scratch, "ctl.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(ctl_path)
    listener.listen(1)
    execs = socket.socket(socket.AF_UNIX)
    execs.bind(EXEC_SOCKET)
    execs.listen(8)
    # Held open read-write: the runtime's non-blocking open of ``go`` succeeds once we are up.
    go = os.open(f"{TD}/go", os.O_RDWR | os.O_NONBLOCK)
    pending: list[int] = []
    winch: list[int] = []
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                signal.SIGUSR2):
        signal.signal(sig, lambda n, _f: pending.append(n))
    size = terminal_size()
    if size is not None:  # -t: the container's terminal (its size follows ctr/arca resizes)
        raw_terminal(1)
        signal.signal(signal.SIGWINCH, lambda n, _f: winch.append(n))
    try:
        start_virtiofsd(launch.get("virtiofsd") or [])
    except OSError as e:
        return fail(str(e))
    try:
        qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=1, stderr=2,
                                close_fds=True)
    except OSError as e:
        return fail(f"cannot start {argv[0]}: {e.strerror}")
    # QEMU connects as it starts; wait in short steps so that a QEMU that died (killed from
    # outside, bad arguments) or a stop request ends this process at once.
    listener.settimeout(0.2)
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = listener.accept()[0]
            break
        except TimeoutError:
            pass
        if pending:
            qemu.kill()
            qemu.wait()
            return 128 + pending[0]
        if qemu.poll() is not None:
            return fail(f"QEMU exited (status {qemu.returncode}) before the guest started")
        if time.monotonic() > deadline:
            return fail("QEMU did not connect to the control port", qemu)
    conn.setblocking(True)
    guest = Lines(conn)
    wants_go, started, next_release = False, time.monotonic(), 0.0
    status: int | None = None
    asked = False
    #: Our stdin goes to the workload (process 0) once the guest runs it, one chunk at a
    #: time: the next only after the guest's ``read`` (nothing piles up in guest RAM).
    stdin_open, stdin_credit = False, True
    #: exec'd processes: id -> the client connection (``vmm.py exec`` run by ``runc exec``)
    clients: dict[int, Lines] = {}
    next_id = 1
    while True:
        while pending:
            n = pending.pop(0)
            if not asked:  # no guest to hand it to yet: stop the VM as runc's kill would
                qemu.kill()
                qemu.wait()
                return 128 + n
            guest.send({"id": 0, "signal": n})
        if winch:
            winch.clear()
            if (size := terminal_size()) is not None:
                guest.send({"id": 0, "winch": size})
        fds: list[Any] = [conn, execs, *(c.sock for c in clients.values())]
        fds += [go] if wants_go else []
        fds += [0] if stdin_open and stdin_credit else []
        try:
            ready = select.select(fds, [], [], 0.2)[0]
        except InterruptedError:
            continue
        if go in ready and os.read(go, 1):
            wants_go = False
            guest.send({"op": "go"})
        if 0 in ready:
            data = read_stdin(0)
            guest.send({"id": 0, "data": data})
            stdin_open, stdin_credit = bool(data), False
        if execs in ready:
            client = Lines(execs.accept()[0])
            clients[next_id] = client
            next_id += 1
        for i, client in list(clients.items()):
            if client.sock not in ready:
                continue
            try:
                msgs = client.recv()
            except (OSError, ValueError):
                msgs = None
            if msgs is None:  # the client is gone (SIGKILL): so is its process
                client.sock.close()
                del clients[i]
                guest.send({"id": i, "signal": int(signal.SIGKILL)})
                continue
            for msg in msgs:
                guest.send({**msg, "id": i})
        if conn in ready:
            msgs = guest.recv()
            if msgs is None:
                break
            for msg in msgs:
                op = msg.get("op")
                if msg.get("id"):  # an exec'd process's output, exit or stdin credit
                    to = clients.get(int(msg["id"]))
                    if to is not None:
                        try:
                            to.send(msg)
                        except OSError:
                            pass  # gone: its SIGKILL follows when we see it
                        if op == "exit":
                            to.sock.close()
                            del clients[int(msg["id"])]
                elif op == "inputs":
                    asked = True
                    answer = {"descriptor": read("descriptor.json"),
                              "process": read("process.json"),
                              "init_data": read("init-data.toml"),
                              "terminal": size and terminal_size(),  # its size now
                              "kernel": launch.get("kernel"), "initrd": launch.get("initrd"),
                              "volumes": launch.get("volumes") or []}
                    guest.send(answer)
                elif op == "evidence":
                    guest.send({"op": "evidence",
                                "answer": relay_evidence(str(msg["request"]))})
                elif op == "go":  # the guest runs its agent: it now takes our stdin too
                    wants_go = stdin_open = True
                elif op == "read":
                    stdin_credit = True
                elif op == "exit":
                    status = int(msg["status"])
                    if msg.get("error"):
                        print(f"arca-vm: error: guest: {str(msg['error'])[:500]}",
                              file=sys.stderr, flush=True)
        if qemu.poll() is not None:
            break
        if asked and time.monotonic() >= next_release:  # the guest has unpacked its initramfs;
            release_boot_images(qemu.pid)  # again later: pages another VM mapped then stayed
            next_release = time.monotonic() + 30
        if not asked and time.monotonic() - started > BOOT_TIMEOUT_S:
            return fail(f"the guest did not report within {BOOT_TIMEOUT_S:.0f}s", qemu)
    for client in clients.values():
        client.sock.close()  # their processes went with the VM
    rc = qemu.wait()
    if status is None:
        return fail(f"the VM stopped (QEMU status {rc}) without reporting the workload's exit "
                    "status")
    return status


def reap_daemons() -> None:
    """virtiofsd exits once QEMU is gone; one that does not is killed (nothing outlives us)."""
    for p in DAEMONS:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()



def exec_client(process_json: str) -> int:
    """``vmm.py exec PROCESS``: what ``runc exec`` runs in the VMM's container for an exec
    into the VM (the runtime rewrites the exec's process to this). It hands ``PROCESS`` to the
    VMM, which hands it to the guest (which checks it against the TD's measured policy), and
    relays this process's stdio, terminal size and signals; it exits with the process's
    status."""
    process = json.loads(process_json)
    size = terminal_size() if process.get("terminal") else None
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.connect(EXEC_SOCKET)
    except OSError as e:
        print(f"arca-vm: error: exec: the VM monitor is not running ({e.strerror})",
              file=sys.stderr, flush=True)
        return 125
    vmm = Lines(sock)
    vmm.send({"exec": process, "terminal": size})
    if size is not None:
        raw_terminal(0)
    events: list[dict[str, Any]] = []
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                signal.SIGUSR2):
        signal.signal(sig, lambda n, _f: events.append({"signal": n}))
    signal.signal(signal.SIGWINCH, lambda n, _f: events.append({"winch": terminal_size()}))
    stdin_open, credit = True, True
    while True:
        while events:
            event = events.pop(0)
            if event.get("winch", 0) is not None:
                vmm.send(event)
        try:
            fds: list[Any] = [sock, *([0] if stdin_open and credit else [])]
            ready = select.select(fds, [], [], 0.2)[0]
        except InterruptedError:
            continue
        if 0 in ready:
            data = read_stdin(0)
            vmm.send({"data": data})
            stdin_open, credit = bool(data), False
        if sock not in ready:
            continue
        msgs = vmm.recv()
        if msgs is None:
            print("arca-vm: error: exec: the VM stopped", file=sys.stderr, flush=True)
            return 137  # as runc's exec'd processes when the container's init dies
        for msg in msgs:
            if msg.get("op") == "out":
                os.write(2 if msg.get("fd") == 2 else 1, base64.b64decode(msg["data"]))
            elif msg.get("op") == "read":
                credit = True
            elif msg.get("op") == "exit":
                if msg.get("error"):
                    print(f"arca-vm: error: guest: {str(msg['error'])[:500]}",
                          file=sys.stderr, flush=True)
                return int(msg["status"])


if __name__ == "__main__":
    if sys.argv[1:2] == ["exec"]:
        sys.exit(exec_client(sys.argv[2]))
    try:
        code = main()
    finally:
        reap_daemons()
    sys.exit(code)
