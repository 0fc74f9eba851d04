"""A real, isolated ``containerd`` for tests, and a helper to drive it with ``ctr``.

Usage::

    with run_containerd(tmp_path / "ctrd") as ctrd:
        ctrd.ctr("images", "pull", "--plain-http", "127.0.0.1:5000/busybox:latest")
        res = ctrd.ctr("run", "--rm", "--runc-binary", RUNTIME, IMAGE, "c1", "true", check=False)

Everything containerd would put under ``/var/lib/containerd``, ``/run/containerd`` or
``/opt/containerd`` (root, state, gRPC/ttrpc/debug sockets, the ``opt`` plugin dir, ctr's IO
FIFOs) lives under the given directory. Two things containerd 1.6 hard-codes cannot be moved:
the shims' abstract-ish sockets under ``/run/containerd/s/<hash>`` (hashed with our own gRPC
address, so they never collide) and the runc shim's default ``--root`` ``/run/containerd/runc/<ns>``
(pass ``--runc-root`` to ``ctr run`` to move it too; :meth:`Containerd.run_args` does).
The CRI plugin is disabled unless ``enable_cri=True``: tests talk to containerd with ``ctr``.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

CTR_TIMEOUT = 120


class Env:
    """A test module's own ``ARCA_ROOT``/``ARCA_RUN`` under ``tmp``."""

    def __init__(self, tmp: pathlib.Path) -> None:
        self.tmp = tmp
        self.vars = {"ARCA_ROOT": str(tmp / "arca-root"), "ARCA_RUN": str(tmp / "arca-run")}


def containerd_available() -> bool:
    return bool(shutil.which("containerd") and shutil.which("ctr") and os.geteuid() == 0)


@dataclass
class Containerd:
    """A running containerd. ``namespace`` is unique per instance, so state never mixes."""

    root: pathlib.Path
    address: str
    namespace: str
    proc: subprocess.Popen[bytes]

    @property
    def fifo_dir(self) -> pathlib.Path:
        return self.root / "fifo"

    @property
    def runc_root(self) -> pathlib.Path:
        """Where ``ctr run`` is told to keep runc state (see :meth:`run_args`)."""
        return self.root / "runc"

    def ctr_argv(self, *args: str) -> list[str]:
        return ["ctr", "--address", self.address, "--namespace", self.namespace, *args]

    def ctr(
        self, *args: str, check: bool = True, timeout: float = CTR_TIMEOUT, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ctr`` against this containerd; raise with its stderr when ``check`` fails."""
        res = subprocess.run(
            self.ctr_argv(*args), capture_output=True, text=True, timeout=timeout, input=input
        )
        if check and res.returncode != 0:
            raise RuntimeError(
                f"ctr {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}"
            )
        return res

    def run_args(self, runtime: str | None = None) -> list[str]:
        """Options for ``ctr run`` that keep FIFOs and runc state inside this instance."""
        out = ["--fifo-dir", str(self.fifo_dir), "--runc-root", str(self.runc_root)]
        if runtime:
            out += ["--runc-binary", runtime]
        return out

    def pull_plain_http(self, ref: str) -> None:
        self.ctr("images", "pull", "--plain-http", ref)

    def log_tail(self, n: int = 4000) -> str:
        return (self.root / "containerd.log").read_text(errors="replace")[-n:]


def _config(root: pathlib.Path, *, enable_cri: bool = False) -> str:
    sock = root / "sock"
    disabled = "[]" if enable_cri else '["io.containerd.grpc.v1.cri"]'
    return f"""version = 2
root = "{root / 'root'}"
state = "{root / 'state'}"
disabled_plugins = {disabled}

[grpc]
  address = "{sock / 'containerd.sock'}"

[ttrpc]
  address = "{sock / 'containerd.sock.ttrpc'}"

[debug]
  address = "{sock / 'debug.sock'}"
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{root / 'opt'}"
"""


@contextlib.contextmanager
def run_containerd(
    workdir: pathlib.Path, *, env: dict[str, str] | None = None, start_timeout: float = 30,
    enable_cri: bool = False, before_start: Callable[[pathlib.Path], None] | None = None,
) -> Iterator[Containerd]:
    """Start containerd with its own config under ``workdir``; kill it and its tasks on exit.

    ``env`` is added to containerd's environment, which its shims and the OCI runtime they
    call inherit (e.g. ``ARCA_ROOT``/``ARCA_RUN`` to isolate ``arca-runtime``'s state).
    ``enable_cri`` keeps the CRI plugin; ``before_start`` gets ``workdir/config.toml`` after it
    is written and may edit it (e.g. merge a drop-in) before containerd starts.

    On exit, running tasks of the instance's namespace are killed and deleted first (so no
    shim or container survives the test), then containerd is stopped and ``workdir`` removed.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    for d in ("root", "state", "sock", "opt", "fifo", "runc"):
        (workdir / d).mkdir(exist_ok=True)
    conf = workdir / "config.toml"
    conf.write_text(_config(workdir, enable_cri=enable_cri))
    if before_start is not None:
        before_start(conf)
    log = open(workdir / "containerd.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        ["containerd", "--config", str(conf)], stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, env={**os.environ, **(env or {})},
    )
    ctrd = Containerd(workdir, str(workdir / "sock" / "containerd.sock"),
                      f"arca-test-{uuid.uuid4().hex[:8]}", proc)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            res = subprocess.run(ctrd.ctr_argv("version"), capture_output=True, text=True)
            if res.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not start: {ctrd.log_tail()}")
            time.sleep(0.1)
        yield ctrd
    finally:
        _teardown(ctrd)
        log.close()
        _unmount_under(workdir)
        shutil.rmtree(workdir, ignore_errors=True)


def _teardown(ctrd: Containerd) -> None:
    if ctrd.proc.poll() is None:
        tasks = ctrd.ctr("tasks", "ls", "-q", check=False, timeout=30).stdout.split()
        for t in tasks:
            ctrd.ctr("tasks", "kill", "-s", "SIGKILL", t, check=False, timeout=30)
        for t in tasks:
            for _ in range(50):
                if ctrd.ctr("tasks", "delete", t, check=False, timeout=30).returncode == 0:
                    break
                time.sleep(0.1)
        for c in ctrd.ctr("containers", "ls", "-q", check=False, timeout=30).stdout.split():
            ctrd.ctr("containers", "delete", c, check=False, timeout=30)
        ctrd.proc.terminate()
        try:
            ctrd.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            ctrd.proc.kill()
            ctrd.proc.wait()
    # ctr puts each container in cgroup /<namespace>/<id>; runc removes the leaf, nobody the
    # per-namespace parent. It is empty now: remove it (v1 controllers and v2 alike).
    for controller in pathlib.Path("/sys/fs/cgroup").iterdir():
        for d in (controller / ctrd.namespace, controller.parent / ctrd.namespace):
            if d.is_dir() and d.parent == controller:
                with contextlib.suppress(OSError):
                    d.rmdir()


def _unmount_under(path: pathlib.Path) -> None:
    """Lazily unmount anything containerd left mounted below ``path`` (deepest first)."""
    prefix = str(path.resolve()) + "/"
    mounts = [
        line.split()[4]
        for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(prefix)
    ]
    for m in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)


def mounts_mentioning(text: str) -> list[str]:
    """Lines of ``/proc/self/mountinfo`` that contain ``text`` (leak checks)."""
    return [ln for ln in pathlib.Path("/proc/self/mountinfo").read_text().splitlines()
            if text in ln]


def cgroups_named(name: str) -> list[str]:
    """Cgroup directories (v1 or v2) whose last component is ``name`` (leak checks)."""
    found: list[str] = []
    base = pathlib.Path("/sys/fs/cgroup")
    for dirpath, dirnames, _ in os.walk(base):
        if name in dirnames:
            found.append(os.path.join(dirpath, name))
        # cgroup trees are shallow for tests; do not descend into huge hierarchies forever
        if dirpath.count("/") > 8:
            dirnames[:] = []
    return found


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes containing ``text`` (leak checks)."""
    out = []
    for p in pathlib.Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            out.append(f"{p.name}: {cmd}")
    return out


def processes_of_container(ctrd: Containerd, container_id: str) -> list[str]:
    """Live processes belonging to a container of ``ctrd``: its shim (``-id <id>`` with our
    namespace) or anything in its cgroup (``/<namespace>/<id>``, ctr's default path)."""
    out = []
    cg = f"/{ctrd.namespace}/{container_id}"
    for p in pathlib.Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            argv = (p / "cmdline").read_bytes().split(b"\0")
            cgroups = (p / "cgroup").read_text()
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        shim = "-id" in args and container_id in args and ctrd.namespace in args
        if shim or any(line.endswith(cg) or (cg + "/") in line for line in cgroups.splitlines()):
            out.append(f"{p.name}: {' '.join(args)[:200]}")
    return out


@contextlib.contextmanager
def ctr_world(tmp: pathlib.Path, layout: pathlib.Path, tags: Sequence[str]
              ) -> Iterator[tuple[Containerd, dict[str, str], Env]]:
    """A containerd of its own under ``tmp`` that has pulled the ``tags`` of the OCI
    ``layout`` from a registry of its own; yields it, ``{tag: image reference}`` and the
    :class:`Env` set in this process meanwhile (the runtime's config follows it); the sim
    platform is stopped after."""
    import pytest

    from arca.host.simtee import client
    from tests.support.images import push
    from tests.support.registry import run_registry

    env = Env(tmp)
    mp = pytest.MonkeyPatch()
    for k, v in env.vars.items():
        mp.setenv(k, v)
    try:
        with run_registry(tmp / "registry") as reg, \
                run_containerd(tmp / "ctrd", env=env.vars) as ctrd:
            images = {}
            for tag in tags:
                images[tag] = push(f"{layout}:{tag}", reg.host, f"busybox:{tag}")
                ctrd.pull_plain_http(images[tag])
            yield ctrd, images, env
    finally:
        client.stop()
        mp.undo()
