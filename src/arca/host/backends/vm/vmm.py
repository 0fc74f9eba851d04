"""The process of a ``vm`` container (runc starts it, in the container's namespaces and cgroups):
it starts QEMU with the argument vector the runtime wrote (``launch.json`` in the TD directory,
mounted at ``/run/arca-vm``) and serves the guest's control port until the VM stops.

Host code, outside the TCB; a single standard-library file, run as ``python3 -I -S vmm.py``
with the host's interpreter (``/usr`` is bind-mounted read-only into the container).

The control port carries JSON lines. Guest -> host: ``{"op": "inputs"}`` (answered with the
host-supplied descriptor, process, init-data and the kernel and initramfs digests of the launch
record: untrusted, checked in the guest),
``{"op": "evidence", "request": LINE}`` (relayed to the sim platform's per-TD socket, which
signs the report over the launch measurement it computed), ``{"op": "go"}`` (answered when the
runtime's ``start`` writes the ``go`` FIFO), ``{"op": "exit", "status": N}``. Host -> guest:
replies in request order, and ``{"signal": N}`` for the signals this process receives (the
guest delivers them to the workload; ``ctr task kill``/``arca stop``).

Exit status: the workload's, as the guest reported it; otherwise 125 with one line naming the
cause (QEMU failed, the guest panicked or never reported, ...) and the console's last lines.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

TD = "/run/arca-vm"
#: A guest that has not asked for its inputs this long after QEMU started is considered dead
#: (boot takes ~5 s under TCG on one busy core; the bound only catches a wedged VM).
BOOT_TIMEOUT_S = float(os.environ.get("ARCA_VM_BOOT_TIMEOUT", "120"))


def fail(message: str, qemu: subprocess.Popen[bytes] | None = None) -> int:
    if qemu is not None and qemu.poll() is None:
        qemu.kill()
        qemu.wait()
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
    # Held open read-write: the runtime's non-blocking open of ``go`` succeeds once we are up.
    go = os.open(f"{TD}/go", os.O_RDWR | os.O_NONBLOCK)
    pending: list[int] = []
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                signal.SIGUSR2):
        signal.signal(sig, lambda n, _f: pending.append(n))
    try:
        qemu = subprocess.Popen(argv, stdin=0, stdout=1, stderr=2, close_fds=True)
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
    buf, wants_go, started, next_release = b"", False, time.monotonic(), 0.0
    status: int | None = None
    asked = False
    while True:
        while pending:
            n = pending.pop(0)
            if not asked:  # no guest to hand it to yet: stop the VM as runc's kill would
                qemu.kill()
                qemu.wait()
                return 128 + n
            conn.sendall(json.dumps({"signal": n}).encode() + b"\n")
        fds = [conn] + ([go] if wants_go else [])
        try:
            ready = select.select(fds, [], [], 0.2)[0]
        except InterruptedError:
            continue
        if go in ready and os.read(go, 1):
            wants_go = False
            conn.sendall(b'{"op": "go"}\n')
        if conn in ready:
            data = conn.recv(65536)
            if not data:
                break
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                msg = json.loads(line)
                op = msg.get("op")
                if op == "inputs":
                    asked = True
                    answer = {"descriptor": read("descriptor.json"),
                              "process": read("process.json"),
                              "init_data": read("init-data.toml"),
                              "terminal": terminal_size(),
                              "kernel": launch.get("kernel"), "initrd": launch.get("initrd")}
                    conn.sendall(json.dumps(answer).encode() + b"\n")
                elif op == "evidence":
                    answer = {"op": "evidence", "answer": relay_evidence(str(msg["request"]))}
                    conn.sendall(json.dumps(answer).encode() + b"\n")
                elif op == "go":
                    wants_go = True
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
    rc = qemu.wait()
    if status is None:
        return fail(f"the VM stopped (QEMU status {rc}) without reporting the workload's exit "
                    "status")
    return status


if __name__ == "__main__":
    sys.exit(main())
