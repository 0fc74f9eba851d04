"""What ``arca run IMAGE [CMD]`` found out last time, so the Nth run need not find it again.

Turning an image reference into a container needs the image record (name, manifest digest,
layer directories) and the process derived from the image config and the image's
/etc/passwd and /etc/group (:func:`arca.host.imageconfig.process_from_image`). Both are pure
functions of files: ``images.json`` (replaced atomically on every change), for ``oci:``
references the layout's files or the archive, and the layer trees (immutable, named by
ChainID). Computing them needs the image store, manifest and config parsers: ~20 ms of
imports (dataclasses, typing, hashlib, pathlib), as long as ``runc run`` takes to run a
container. So the slow path's answer is remembered together with a signature (device, inode,
size, mtime, ctime) of every file it was computed from, including the Python sources that
compute it; a later run with the same reference, command, ``-e`` values and image store
settings (``ARCA_IMAGE_*`` in the environment) uses the answer only when every signature still
matches, and otherwise takes the slow path (which re-reads, re-verifies and refreshes the
entry). A signature cannot be kept by an edit in place: ctime
changes with any write and cannot be set back.

Nothing security-relevant is skipped: the rootfs digest and the TD's launch
measurement are computed by the runtime as always; this only saves the *host's* lookups,
whose inputs are root-owned state under ARCA_ROOT and the files the user named.

The cache is one JSON file, ``ARCA_ROOT/cache/run-plans.json``, replaced atomically without
fsync (losing it costs one slow run). A missing, unreadable or odd file is a miss. The run
that first loads an ``oci:`` layout into the store changes ``images.json`` while it runs, so
what it found is not remembered (its signatures no longer match): the second run remembers,
the third is warm. Signatures taken after the slow path instead could bless an answer that a
concurrent ``pull``/``rm`` had already made stale.
"""

from __future__ import annotations

import os

from arca._internal.fastjson import json_dumps, json_loads
from arca._internal.fsutil import write_atomic
from arca.host.containers.state import root_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

VERSION = 1
#: Entries kept (least recently written dropped): references, and processes per reference.
MAX_PLANS = 32
MAX_PROCS = 16
#: An OCI layout with more blob files than this is not remembered (its signature is the
#: stat of every file, which must stay cheap).
MAX_LAYOUT_FILES = 256
#: The sources whose code computes a plan: editing one invalidates every plan.
_HOST = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE_FILES = tuple(os.path.join(_HOST, *p) for p in (
    ("imageconfig.py",), ("images", "store.py"), ("images", "ingest.py"),
    ("images", "reference.py"), ("images", "manifest.py"), ("images", "limits.py"),
    ("containers", "runplan.py")))


def cache_path() -> str:
    return os.path.join(root_dir(), "cache", "run-plans.json")


def images_root() -> str:
    """``ImageStore().root`` (the default store of ``arca run``)."""
    return os.path.join(root_dir(), "images")


def plan_key(image: str) -> str:
    """The reference, in the directory a relative ``oci:`` path means, under the image store
    settings of the environment (``ARCA_IMAGE_MAX_*`` limits: loading a layout checks them)."""
    key = image
    if image.startswith("oci:") and not image[4:].startswith("/"):
        key = f"{os.getcwd()}\0{image}"
    settings = sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith("ARCA_IMAGE_"))
    return "\0".join([key, *settings])


def proc_key(command: list[str], env: list[str]) -> str:
    return json_dumps([command, env])


def _sig(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def dependencies(image: str) -> list[str] | None:
    """The files the slow path reads to resolve ``image`` (None: too many to watch)."""
    deps = [os.path.join(images_root(), "images.json"), *CODE_FILES]
    if not image.startswith("oci:"):
        return deps
    spec = os.path.abspath(image[4:])
    head, sep, tail = spec.rpartition(":")
    # As ingest.split_oci_ref: PATH[:TAG]; watch both readings, whichever the slow path took.
    paths = [spec] + ([head] if sep and "/" not in tail and tail else [])
    for p in paths:
        deps.append(p)
        blobs = os.path.join(p, "blobs")
        if not os.path.isdir(blobs):
            continue
        deps += [os.path.join(p, "index.json"), os.path.join(p, "oci-layout")]
        try:
            for alg in sorted(os.listdir(blobs)):
                d = os.path.join(blobs, alg)
                deps.append(d)  # its mtime changes when a blob is added or removed
                deps += [os.path.join(d, n) for n in sorted(os.listdir(d))]
        except OSError:
            return None
        if len(deps) > MAX_LAYOUT_FILES:
            return None
    return deps


def signatures(deps: list[str]) -> list[list[Any]]:
    return [[p, _sig(p)] for p in deps]


def _load() -> dict[str, Any]:
    try:
        with open(cache_path(), "rb") as f:
            obj = json_loads(f.read())
    except (OSError, ValueError):
        return {}
    if not isinstance(obj, dict) or obj.get("version") != VERSION:
        return {}
    plans = obj.get("plans")
    return plans if isinstance(plans, dict) else {}


def _valid_plan(plan: object) -> bool:
    if not isinstance(plan, dict):
        return False
    layers = os.path.join(images_root(), "layers") + os.sep
    lowers = plan.get("lowerdirs")
    return (isinstance(plan.get("name"), str) and isinstance(plan.get("digest"), str)
            and isinstance(lowers, list) and bool(lowers)
            and all(isinstance(p, str) and p.startswith(layers) and ".." not in p
                    for p in lowers)
            and isinstance(plan.get("procs"), dict) and _watches_the_basics(plan.get("deps")))


def _watches_the_basics(deps: object) -> bool:
    """The image database and the code are among the files watched (an entry watching
    nothing would never go stale)."""
    if not isinstance(deps, list):
        return False
    watched = {d[0] for d in deps if isinstance(d, list) and d and isinstance(d[0], str)}
    return {os.path.join(images_root(), "images.json"), *CODE_FILES} <= watched


def _valid_proc(proc: object) -> bool:
    if not isinstance(proc, dict):
        return False
    args, env, user = proc.get("args"), proc.get("env"), proc.get("user")
    return (isinstance(args, list) and bool(args) and all(isinstance(a, str) for a in args)
            and isinstance(env, list) and all(isinstance(e, str) for e in env)
            and isinstance(proc.get("cwd"), str) and isinstance(user, dict)
            and isinstance(user.get("uid"), int) and isinstance(user.get("gid"), int))


def lookup(image: str, command: list[str], env: list[str]
           ) -> tuple[str, str, list[str], dict[str, Any]] | None:
    """(image name, manifest digest, lowerdirs, OCI process) remembered for this reference,
    command and environment, if every file it came from is unchanged; else None."""
    plan = _load().get(plan_key(image))
    if not _valid_plan(plan):
        return None
    assert isinstance(plan, dict)
    proc = plan["procs"].get(proc_key(command, env))
    if not _valid_proc(proc):
        return None
    for dep in plan["deps"]:
        # None: the file did not exist, and must still not exist (``oci:PATH:TAG`` is read
        # differently when ``PATH:TAG`` exists)
        if not (isinstance(dep, list) and len(dep) == 2 and isinstance(dep[0], str)
                and _sig(dep[0]) == dep[1]):
            return None
    return plan["name"], plan["digest"], list(plan["lowerdirs"]), dict(proc)


def remember(image: str, sigs: list[list[Any]], name: str, digest: str, lowerdirs: list[str],
             command: list[str], env: list[str], proc: dict[str, Any]) -> None:
    """Store what the slow path found; ``sigs`` were taken *before* it read anything, so a
    change while it ran makes the entry stale rather than wrong. Best effort."""
    key = plan_key(image)
    plans = _load()
    old = plans.pop(key, None)
    procs: dict[str, Any] = {}
    if _valid_plan(old) and isinstance(old, dict) and old["deps"] == sigs and (
            old["name"], old["digest"], old["lowerdirs"]) == (name, digest, lowerdirs):
        procs = old["procs"]
    procs.pop(proc_key(command, env), None)
    procs[proc_key(command, env)] = proc
    while len(procs) > MAX_PROCS:
        procs.pop(next(iter(procs)))
    plans[key] = {"name": name, "digest": digest, "lowerdirs": lowerdirs, "deps": sigs,
                  "procs": procs}
    while len(plans) > MAX_PLANS:
        plans.pop(next(iter(plans)))
    path = cache_path()
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write_atomic(path, json_dumps({"version": VERSION, "plans": plans}).encode(), 0o600,
                     durable=False)
    except OSError:
        pass
