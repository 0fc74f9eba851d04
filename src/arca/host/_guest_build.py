"""The builder behind :func:`arca.host.guestruntime.ensure_guest_runtime` (private).

Kept apart so ``arca-runtime``'s hot path (the already-built fast path) never imports
``subprocess``, ``py_compile``, ``sysconfig`` or ``cryptography``.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from arca._internal.fsutil import write_atomic
from arca.host.guestruntime import site_packages
from arca.host.treedigest import tree_digest
from arca.wire.constants import GUEST_RUNTIME_MOUNT
from arca.wire.errors import ConfigError

PYVER = f"python{sys.version_info.major}.{sys.version_info.minor}"
#: Third-party distributions shipped whole (lazy imports inside them are theirs to make).
PACKAGES = ("cryptography", "cffi", "_cffi_backend")
#: Stdlib modules left out on purpose. ``_hashlib`` (OpenSSL's hashes): without it ``hashlib``
#: and ``hmac`` use CPython's builtin SHA-2 (same digests, public API), and a TD start does not
#: load OpenSSL's libcrypto for three hashes (~4 ms of CPU; ADR 0054). ``ssl`` links it itself.
OMITTED = ("_hashlib",)

_PROBE = r"""
import json, pathlib, sys, importlib
src = pathlib.Path(sys.argv[1])
for zone in ("wire", "guest"):
    for f in sorted((src / "arca" / zone).glob("*.py")):
        importlib.import_module(f"arca.{zone}" + ("" if f.stem == "__init__" else "." + f.stem))
# Exercise the paths the agent takes at run time whose imports happen lazily in the stdlib.
import runpy, ssl, urllib.request, http.client, encodings.idna, tomllib, gzip, base64, socket
# hashlib's builtin implementations, which serve it in the runtime (OMITTED: no _hashlib).
for m in ("_md5", "_sha1", "_sha256", "_sha512", "_sha2", "_sha3", "_blake2"):
    try:
        importlib.import_module(m)
    except ImportError:  # another Python's names
        pass
import json, re, fnmatch
ssl.create_default_context()
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.keywrap import aes_key_wrap, aes_key_unwrap
k = ec.generate_private_key(ec.SECP256R1()); k.public_key().public_numbers()
x = x25519.X25519PrivateKey.generate(); x.exchange(x.public_key())
aes_key_unwrap(bytes(32), aes_key_wrap(bytes(32), bytes(32)))
AESGCM(bytes(32)).encrypt(bytes(12), b"x", None)
print(json.dumps({n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())}))
"""



def publish(base: pathlib.Path, key: str) -> tuple[str, str]:
    """Build into a temporary directory, rename it to ``base/key``, then write
    ``base/key.json``; the caller holds the build lock. Returns (digest, loader)."""
    tmp = pathlib.Path(tempfile.mkdtemp(dir=base, prefix=".build-"))
    try:
        loader = build(tmp)
        digest = tree_digest(tmp)
        if (base / key).exists():  # a build without its meta file: a crash; replace it
            shutil.rmtree(base / key)
        os.rename(tmp, base / key)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_atomic(base / f"{key}.json", json.dumps({"digest": digest, "loader": loader}).encode())
    return digest, loader


def build(dest: pathlib.Path) -> str:
    """Populate ``dest`` (an empty directory); returns the loader's file name."""
    import arca

    src = pathlib.Path(arca.__file__).resolve().parent
    site = site_packages()
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"]).resolve()
    pylib = dest / "lib" / PYVER
    (pylib / "lib-dynload").mkdir(parents=True)
    (dest / "bin").mkdir()

    interpreter = pathlib.Path(os.path.realpath(sys.executable))
    _copy(interpreter, dest / "bin" / "python3", 0o755)
    elves = [interpreter]

    modules = _probe_modules(src.parent, site)
    for name, file in sorted(modules.items()):
        if not file or name in OMITTED:
            continue
        f = pathlib.Path(file).resolve()
        if f.is_relative_to(stdlib) and "site-packages" not in f.parts:
            rel = f.relative_to(stdlib)
            _copy(f, pylib / rel, 0o755 if f.suffix == ".so" else 0o644)
            if f.suffix == ".so":
                elves.append(f)
        elif f.is_relative_to(src):
            continue  # Arca's own: copied below (also when Arca is installed in ``site``)
        elif f.is_relative_to(site):
            if name.split(".")[0] not in PACKAGES:
                raise ConfigError(f"guest runtime: module {name} ({f}) is not in the shipped "
                                  f"packages {PACKAGES}")
        else:
            raise ConfigError(f"guest runtime: module {name} comes from {f}, outside the "
                              f"stdlib {stdlib} and the package directory {site}")
    # Codecs are looked up by name at run time: ship the whole (small) encodings package.
    shutil.copytree(stdlib / "encodings", pylib / "encodings", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for pkg in PACKAGES:
        for cand in (site / pkg, *site.glob(f"{pkg}.*.so")):
            if cand.is_dir():
                shutil.copytree(cand, pylib / pkg, ignore=shutil.ignore_patterns(
                    "__pycache__", "*.pyi", "py.typed"))
                elves += sorted((pylib / pkg).rglob("*.so"))
            elif cand.is_file():
                _copy(cand, pylib / cand.name, 0o755)
                elves.append(cand)
    (pylib / "arca").mkdir()
    _copy(src / "__init__.py", pylib / "arca" / "__init__.py", 0o644)
    for zone in ("guest", "wire"):
        for f in sorted((src / zone).glob("*.py")):
            _copy(f, pylib / "arca" / zone / f.name, 0o644)

    loader = _copy_shared_libraries(elves, dest / "lib")
    _write_evidence_command(dest / "bin" / "arca-evidence", loader)
    _precompile(dest)
    _normalize(dest)
    return loader


def _probe_modules(src: pathlib.Path, site: pathlib.Path) -> dict[str, str | None]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": f"{src}:{site}"}
    res = subprocess.run([sys.executable, "-S", "-B", "-c", _PROBE, str(src)],
                         capture_output=True, text=True, env=env)
    if res.returncode != 0:
        tail = res.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ConfigError(f"guest runtime: importing the guest code failed: {tail[0]}")
    out: dict[str, str | None] = json.loads(res.stdout)
    return out


_LDD_LINE = re.compile(r"^\s*(\S+)(?:\s+=>\s+(\S+))?\s+\(0x[0-9a-f]+\)$")


def _copy_shared_libraries(elves: list[pathlib.Path], libdir: pathlib.Path) -> str:
    """Copy every shared library ``ldd`` resolves for ``elves`` (under its DT_NEEDED name)
    and the ELF loader; returns the loader's file name."""
    loader = None
    for elf in elves:
        res = subprocess.run(["ldd", str(elf)], capture_output=True, text=True)
        if res.returncode != 0 and "statically linked" not in res.stdout + res.stderr:
            raise ConfigError(f"guest runtime: ldd {elf} failed: {res.stderr.strip()}")
        for line in res.stdout.splitlines():
            m = _LDD_LINE.match(line)
            if not m:
                if "not found" in line:
                    raise ConfigError(f"guest runtime: {elf} needs a missing library: {line}")
                continue
            name, resolved = m.group(1), m.group(2)
            if resolved is None and name.startswith("/"):  # the ELF loader
                loader = os.path.basename(name)
                _copy(pathlib.Path(os.path.realpath(name)), libdir / loader, 0o755)
            elif resolved:
                _copy(pathlib.Path(os.path.realpath(resolved)), libdir / name, 0o755)
    if loader is None:
        raise ConfigError(f"guest runtime: no ELF loader found for {elves[0]}")
    return loader


def _write_evidence_command(path: pathlib.Path, loader: str) -> None:
    m = GUEST_RUNTIME_MOUNT
    # Needs /bin/sh in the image; elsewhere run the same command line directly.
    path.write_text(
        "#!/bin/sh\n"
        f'exec {m}/lib/{loader} --library-path {m}/lib {m}/bin/python3 -I -S -B '
        '-m arca.guest.evidence "$@"\n'
    )
    path.chmod(0o755)


_COMPILE = r"""
import importlib.util, pathlib, py_compile, sys
dest, mount = pathlib.Path(sys.argv[1]), sys.argv[2]
for f in sorted(dest.rglob("*.py")):
    py_compile.compile(str(f), cfile=importlib.util.cache_from_source(str(f)),
                       dfile=f"{mount}/{f.relative_to(dest)}", doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
"""


def _precompile(dest: pathlib.Path) -> None:
    """Byte-compile every module with an unchecked source hash and its in-TD file name, so
    the agent starts fast and the bytes depend only on the source.

    In a fresh process with a fixed hash seed: marshal writes back-references depending on
    object reference counts, so compiling inside a process with other modules loaded (pytest,
    the runtime) would give different bytes for the same source.
    """
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": "0"}
    res = subprocess.run([sys.executable, "-S", "-s", "-B", "-c", _COMPILE, str(dest),
                          GUEST_RUNTIME_MOUNT], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise ConfigError(f"guest runtime: byte-compiling failed: {res.stderr.strip()[-500:]}")


def _normalize(dest: pathlib.Path) -> None:
    # World-readable on purpose: the workload user reads the runtime (arca-evidence).
    for dirpath, _dirnames, filenames in os.walk(dest):
        os.chmod(dirpath, 0o755)  # noqa: S103
        for n in filenames:
            p = os.path.join(dirpath, n)
            mode = 0o755 if os.stat(p).st_mode & 0o100 else 0o644
            os.chmod(p, mode)
            if os.geteuid() == 0:
                os.chown(p, 0, 0)
        if os.geteuid() == 0:
            os.chown(dirpath, 0, 0)


def _copy(src: pathlib.Path, dst: pathlib.Path, mode: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    os.chmod(dst, mode)


