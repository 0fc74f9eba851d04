"""A hand-written confidential-container bundle run with real runc, for the guest tests.

The bundle is what ``arca-runtime create`` produces (contract §3): tmpfs at /run/arca, the
per-TD device directory read-only at /run/arca/tee (with an in-test sim device serving real
signed reports), the guest runtime read-only at /.arca, the agent as the process. The measured
descriptor is computed from the original process.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import uuid

from arca.host.guestruntime import GuestRuntime
from arca.host.runtime.bundle import measured_env
from arca.host.simtee.platform import init_data_hash
from arca.host.treedigest import tree_digest
from arca.wire.descriptor import LaunchDescriptor, ProcessSpec
from tests.support.guest_simdevice import SimDeviceServer

APPLETS = ("sh", "echo", "cat", "ls", "sleep", "id", "env", "true", "stat", "test", "grep", "pwd",
           "sort")


def busybox_rootfs(r: pathlib.Path) -> pathlib.Path:
    """A rootfs with busybox-static only: no libc, no Python."""
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "run", "home/app"):
        (r / d).mkdir(parents=True)
    shutil.copy2("/bin/busybox", r / "bin" / "busybox")
    for a in APPLETS:
        (r / "bin" / a).symlink_to("busybox")
    (r / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    os.chown(r / "home" / "app", 1000, 1000)
    assert not (r / "lib64").exists() and not (r / "usr").exists()  # no libc, no python
    return r


class Td:
    """One hand-written bundle + its sim device; ``run()`` executes it with real runc."""

    def __init__(self, base: pathlib.Path, gr: GuestRuntime, rootfs: pathlib.Path, args: list[str],
                 env: list[str] | None = None, uid: int = 0, cwd: str = "/",
                 init_data: bytes | None = None) -> None:
        self.id = f"arca-gt-{uuid.uuid4().hex[:10]}"
        self.base = base
        self.state = base / "runc-root"
        self.devdir = base / "td"
        self.devdir.mkdir(parents=True)
        env = env if env is not None else ["PATH=/bin", "GREETING=hello"]
        self.original = {"args": args, "env": env, "cwd": cwd, "user": {"uid": uid, "gid": uid},
                         "terminal": False}
        self.descriptor = LaunchDescriptor("sim", gr.digest, tree_digest(rootfs),
                                           ProcessSpec(tuple(args), cwd, uid, uid,
                                                       measured_env(env)))
        (self.devdir / "descriptor.json").write_text(json.dumps(self.descriptor.to_json()))
        (self.devdir / "process.json").write_text(json.dumps(self.original))
        init_hash = bytes(48)
        if init_data is not None:
            (self.devdir / "init-data.toml").write_bytes(init_data)
            init_hash = init_data_hash(init_data)
        self.device = SimDeviceServer(str(self.devdir / "sim.sock"),
                                      self.descriptor.measurement(), init_hash, td_id=self.id)
        bundle = base / "bundle"
        bundle.mkdir()
        subprocess.run(["runc", "spec", "-b", str(bundle)], check=True)
        cfg = json.loads((bundle / "config.json").read_text())
        cfg["root"] = {"path": str(rootfs), "readonly": True}
        cfg["process"].update(args=gr.agent_args(), env=gr.agent_env(), cwd="/", terminal=False,
                              user={"uid": 0, "gid": 0})
        # The capabilities containerd's default spec grants; the agent needs SETUID/SETGID
        # to become a non-root workload user and CHOWN to hand it its secrets.
        caps = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_SETGID",
                "CAP_SETUID", "CAP_KILL", "CAP_AUDIT_WRITE", "CAP_NET_BIND_SERVICE"]
        cfg["process"]["capabilities"] = {k: caps for k in ("bounding", "effective",
                                                             "permitted")}
        cfg["mounts"] += [
            {"destination": "/run/arca", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=0755"]},
            {"destination": "/run/arca/tee", "type": "bind", "source": str(self.devdir),
             "options": ["rbind", "ro"]},
            {"destination": "/.arca", "type": "bind", "source": str(gr.path),
             "options": ["rbind", "ro"]},
        ]
        self.bundle = bundle
        self.config = cfg

    def share_host_network(self) -> None:
        """Join the host's network namespace (to reach a KBS on 127.0.0.1)."""
        ns = self.config["linux"]["namespaces"]
        self.config["linux"]["namespaces"] = [n for n in ns if n["type"] != "network"]

    def write_process(self, process: dict) -> None:
        (self.devdir / "process.json").write_text(json.dumps(process))

    def popen(self) -> subprocess.Popen[bytes]:
        (self.bundle / "config.json").write_text(json.dumps(self.config))
        return subprocess.Popen(["runc", "--root", str(self.state), "run", "-b",
                                 str(self.bundle), self.id], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def run(self, timeout: float = 60) -> tuple[int, str, str]:
        p = self.popen()
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out.decode(), err.decode()

    def close(self) -> None:
        subprocess.run(["runc", "--root", str(self.state), "delete", "--force", self.id],
                       capture_output=True)
        self.device.close()


def run_in_guest_runtime(root: pathlib.Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with the shipped guest runtime (its loader, interpreter and trimmed stdlib:
    what a TD has), built under ``root`` if needed."""
    from arca.host.guestruntime import ensure_guest_runtime

    gr = ensure_guest_runtime(root)
    lib = gr.path / "lib"
    return subprocess.run([str(lib / gr.loader), "--library-path", str(lib),
                           str(gr.path / "bin" / "python3"), "-I", "-S", "-B", "-c", code],
                          capture_output=True, text=True, timeout=60)
