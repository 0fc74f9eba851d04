"""The guest side of a ``tdx``/``snp`` TD, booted under TCG (no TEE here): the ``vm`` backend's
kernel, initramfs and dm-verity rootfs, with a launch descriptor whose TEE is ``tdx``/``snp`` on
the measured command line. The agent takes its evidence from configfs-tsm (the table's source
for these TEEs), finds no TEE, and stops with one clear error before any secret is asked for:
the KBS named in the init-data is asked for a nonce (RCAR's ``auth``) and for nothing else.

The host side of the guest's control port is played by this test (the ``vm`` VMM's protocol:
``inputs``, ``evidence``, ``go``, ``exit``), because runc, containerd and the runtime refuse a
``tdx`` container on this host before anything starts (test_hardware_refused.py).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from arca.wire.descriptor import LaunchDescriptor, ProcessSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]
BOOT_TIMEOUT = 240.0


def vm_parts(tmp_path):  # type: ignore[no-untyped-def]
    from arca.host.backends.vm import assets
    from arca.host.backends.vm.initramfs import ensure_initramfs
    from arca.host.backends.vm.rootfs import ensure_rootfs_image
    from arca.host.guestruntime import ensure_guest_runtime
    from arca.host.treedigest import rootfs_digest

    try:
        kernel = assets.check_host()
    except assets.VmUnavailable as e:
        pytest.skip(f"vm backend parts missing: {e}")
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    digest = rootfs_digest(rootfs)
    gr = ensure_guest_runtime()
    return kernel, ensure_initramfs(gr, kernel), ensure_rootfs_image(rootfs, digest), gr, digest


class Kbs:
    """The KBS's first step only (RCAR ``auth``: the nonce the evidence must bind); it records
    every request, so a request for evidence appraisal or a resource would show."""

    def __init__(self) -> None:
        import base64
        import http.server

        seen: list[str] = []
        self.seen = seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                seen.append(self.path)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/kbs/v0/auth":
                    self.send_error(500)
                    return
                body = json.dumps({"nonce": base64.b64encode(os.urandom(32)).decode(),
                                   "extra-params": {}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Set-Cookie", "kbs-session-id=test; Path=/kbs/v0")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                seen.append(self.path)
                self.send_error(500)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("tee", ["tdx", "snp"])
def test_guest_finds_no_tee_and_stops_before_any_secret(tmp_path, monkeypatch, tee):
    from arca.host.backends.vm import launch as vl

    monkeypatch.setenv("ARCA_ROOT", str(tmp_path / "root"))
    kernel, initrd, image, gr, digest = vm_parts(tmp_path)
    kbs = Kbs()
    init_data = ('version = "0.1.0"\nalgorithm = "sha384"\n[data]\n'
                 f'kbs_url = "http://127.0.0.1:{kbs.port}"\n'
                 "agent = 'insecure_kbs = true'\n"  # plain HTTP on loopback, said so
                 'resources = """\n[[resource]]\npath = "default/key/app"\nname = "app.key"\n"""\n')
    process = ProcessSpec(("/bin/busybox", "echo", "workload ran"))
    descriptor = LaunchDescriptor(tee, gr.digest, digest, process)
    cmdline = vl.cmdline(image.cmdline_value(), descriptor.measurement().hex())
    launch = vl.Launch(str(kernel.vmlinux), str(initrd.path), str(image.path), cmdline)
    ctl = tmp_path / "ctl.sock"
    replace = {vl.IN_CONTAINER_KERNEL: launch.kernel, vl.IN_CONTAINER_INITRD: launch.initrd,
               vl.IN_CONTAINER_ROOTFS: launch.rootfs,
               f"{vl.IN_CONTAINER_TD}/console.log": str(tmp_path / "console.log"),
               f"{vl.IN_CONTAINER_SCRATCH}/ctl.sock": str(ctl)}
    argv = []
    for arg in vl.qemu_argv(shutil.which("qemu-system-x86_64") or "qemu-system-x86_64",
                            launch):
        for old, new in replace.items():
            arg = arg.replace(old, new)
        argv.append(arg)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(ctl))
    listener.listen(1)
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    status = None
    try:
        listener.settimeout(30)
        conn = listener.accept()[0]
        conn.settimeout(BOOT_TIMEOUT)
        buf, deadline = b"", time.monotonic() + BOOT_TIMEOUT
        while status is None and time.monotonic() < deadline:
            try:
                data = conn.recv(65536)
            except TimeoutError:
                log = tmp_path / "console.log"
                pytest.fail("the guest did not report: "
                            + (log.read_text(errors="replace")[-3000:] if log.exists() else ""))
            if not data:
                break
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                msg = json.loads(line)
                if msg.get("op") == "inputs":
                    answer = {"descriptor": json.dumps(descriptor.to_json()),
                              "process": json.dumps({"args": list(process.args), "cwd": "/",
                                                     "user": {"uid": 0, "gid": 0},
                                                     "env": []}),
                              "init_data": init_data}
                    conn.sendall(json.dumps(answer).encode() + b"\n")
                elif msg.get("op") == "evidence":
                    pytest.fail(f"a {tee} guest asked the host for evidence: {msg}")
                elif msg.get("op") == "go":
                    conn.sendall(b'{"op": "go"}\n')
                elif msg.get("op") == "exit":
                    status = int(msg["status"])
        out, err = qemu.communicate(timeout=60)
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()
        listener.close()
        kbs.close()
    console = (tmp_path / "console.log").read_text(errors="replace")
    text = err.decode(errors="replace")
    assert status not in (None, 0), (status, text, console[-2000:])
    assert "configfs-tsm" in text, (text, console[-2000:])
    # configfs and tsm are loaded and mounted, the TEE's driver is not: no provider.
    assert "no TEE report provider: not a TDX/SNP guest" in text, (text, console[-2000:])
    assert len([ln for ln in text.splitlines() if "error" in ln]) == 1, text
    assert b"workload ran" not in out
    # The nonce was asked for (RCAR's first step); no evidence, no secret ever was.
    assert all(path == "/kbs/v0/auth" for path in kbs.seen), kbs.seen
