"""Build the self-contained, read-only guest runtime mounted at ``/.arca`` in every TD.

Layout (paths inside the TD)::

    /.arca/bin/python3            the running host interpreter (sys.executable, resolved)
    /.arca/bin/arca-evidence      sh wrapper: print /run/arca/evidence.json or fetch fresh evidence
    /.arca/lib/ld-linux-*.so.*    the ELF loader; the agent is started through it, so the image
                                  needs no libc and no /lib64 (busybox-static, distroless)
    /.arca/lib/lib*.so*           shared libraries of the interpreter and of the extension modules
    /.arca/lib/python3.X/         trimmed stdlib (only modules the guest code and cryptography
                                  import), lib-dynload/, cryptography + cffi, arca/{guest,wire}

What it does not do: patch ELF files, or ship anything the guest does not import. The stdlib
subset is found by importing every ``arca.guest``/``arca.wire`` module and exercising the
cryptography/TLS paths in a probe process, so guest modules must import what they use at
module level, or the probe must import it (as it does ``tomllib`` and ``ssl``, which the agent
and the KBS client import lazily to keep TD start-up short).

Reproducibility: ``.pyc`` files are compiled with unchecked source hashes and the in-TD file
name, so their bytes depend only on the source; the digest is :func:`tree_digest` of the
directory (no mtimes). Builds happen once per input fingerprint (interpreter, venv packages,
guest sources: path/size/mtime) under a file lock and are published by an atomic rename; the
fast path is a few ``stat`` calls and one small file read (the builder, with its heavier
imports, lives in :mod:`arca.host._guest_build`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pathlib
import sys

from arca.host import paths
from arca.wire.constants import GUEST_RUNTIME_MOUNT
from arca.wire.record import dataclass

#: The agent's entry point, run with ``python -c``. The cyclic garbage collector is off: the
#: agent lives for milliseconds and then execs, and collections triggered by its imports
#: (``cryptography``, ``typing``) cost ~2 ms of CPU per TD start.
AGENT_MAIN = ("import gc; gc.disable(); import sys; from arca.guest.agent import main; "
              "sys.exit(main())")
#: Bump when the layout or the probe changes, so an old build is never reused.
BUILD_VERSION = "3"

@dataclass(frozen=True)
class GuestRuntime:
    path: pathlib.Path
    digest: str
    loader: str

    def agent_args(self) -> list[str]:
        """The TD's process: the agent, started through the shipped ELF loader. ``-I`` makes
        the interpreter ignore every ``PYTHON*`` variable the host might set. ``-c``, not
        ``-m``: ``runpy`` would cost ~1.5 ms of every TD start."""
        return [*self.python_args(), "-c", AGENT_MAIN]

    def python_args(self) -> list[str]:
        m = GUEST_RUNTIME_MOUNT
        return [f"{m}/lib/{self.loader}", "--library-path", f"{m}/lib", f"{m}/bin/python3",
                "-I", "-S", "-B"]

    def agent_env(self) -> list[str]:
        return ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def site_packages() -> pathlib.Path:
    """Where ``cryptography`` is installed, found without importing it."""
    # A sys.path scan rather than importlib.util.find_spec: importlib.util costs ~1 ms of
    # every create (this runs in every fingerprint).
    for entry in sys.path:
        init = os.path.join(entry or ".", "cryptography", "__init__.py")
        if os.path.isfile(init):
            return pathlib.Path(init).resolve().parent.parent
    raise ModuleNotFoundError("cryptography is not installed")


def _fingerprint() -> str:
    """Cheap identity of the build inputs: stat of interpreter, packages and guest sources."""
    import arca

    h = hashlib.sha256(f"{BUILD_VERSION}\0{sys.version}\0".encode())
    src = pathlib.Path(arca.__file__).parent
    items = [pathlib.Path(os.path.realpath(sys.executable)), src / "__init__.py"]
    for zone in ("guest", "wire"):
        with os.scandir(src / zone) as it:
            items += sorted(pathlib.Path(e.path) for e in it if e.name.endswith(".py"))
    site = site_packages()
    items += [site / "cryptography" / "__init__.py", site / "cffi" / "__init__.py"]
    for p in items:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        except FileNotFoundError:
            h.update(f"{p}\0missing\0".encode())
    return h.hexdigest()[:32]


def ensure_guest_runtime(root: pathlib.Path | None = None) -> GuestRuntime:
    """The guest runtime for the current interpreter and sources, built if needed."""
    base = (root or paths.root_dir()) / "guest-runtime"
    key = _fingerprint()
    found = _load(base, key)
    if found:
        return found
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others wait and reuse its result
        found = _load(base, key)
        if found:
            return found
        from arca.host import _guest_build

        digest, loader = _guest_build.publish(base, key)
    return GuestRuntime(base / key, digest, loader)


def _load(base: pathlib.Path, key: str) -> GuestRuntime | None:
    # The meta file is written last, after the directory's atomic rename: present means done.
    try:
        obj = json.loads((base / f"{key}.json").read_bytes())
        return GuestRuntime(base / key, str(obj["digest"]), str(obj["loader"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
