"""The process an image runs, derived the way containerd's ``ctr run`` derives it.

containerd (``oci.WithImageConfigArgs`` + ``oci.WithUser``, 1.6/1.7) does, and so do we:

* ``args`` = Entrypoint + (the command-line args if any, else Cmd).
* ``env`` = the image's Env, or ``PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:
  /sbin:/bin`` when the image has no Env at all; extra ``-e`` values then replace a variable of
  the same name in place or are appended (a bare ``NAME`` removes it).
* ``cwd`` = WorkingDir, ``/`` when empty.
* ``user``: empty -> 0:0. ``uid`` -> that uid with the gid of its /etc/passwd entry (0 when the
  uid is not listed or there is no /etc/passwd). ``name`` -> uid and gid of that /etc/passwd
  entry (error when missing). ``u:g`` with each side numeric or a name looked up in
  /etc/passwd and /etc/group. Additional gids: the groups of /etc/group listing the user.

Files are read from the unpacked rootfs without following symlinks out of it: a symlinked
``/etc/passwd`` is resolved inside the rootfs, as the container would see it. Not here: the
rest of the OCI runtime spec (:mod:`arca.host.containers.spec`).
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from arca.host.images.manifest import ImageConfig
from arca.wire.errors import InvalidInput

DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: /etc/passwd and /etc/group larger than this are refused (they come from the image).
MAX_ID_FILE_BYTES = 4 << 20
#: Symlink hops allowed while resolving a path inside the rootfs (like the kernel's 40).
MAX_SYMLINKS = 40


class UserNotFound(InvalidInput):
    """The image's User names a user or group that its /etc/passwd or /etc/group lacks."""


@dataclass(frozen=True)
class ProcessConfig:
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()

    def to_oci(self) -> dict[str, object]:
        user: dict[str, object] = {"uid": self.uid, "gid": self.gid}
        if self.additional_gids:
            user["additionalGids"] = list(self.additional_gids)
        return {"args": list(self.args), "env": list(self.env), "cwd": self.cwd, "user": user}


def replace_or_append_env(defaults: list[str], overrides: list[str]) -> list[str]:
    """containerd's ``replaceOrAppendEnvValues``."""
    results: list[str | None] = list(defaults)
    index = {e.split("=", 1)[0]: i for i, e in enumerate(defaults)}
    for value in overrides:
        key, sep, _ = value.partition("=")
        if not sep:
            if key in index:
                results[index[key]] = None
            continue
        if key in index:
            results[index[key]] = value
        else:
            index[key] = len(results)
            results.append(value)
    return [r for r in results if r is not None and r != ""]


def resolve_in_root(rootfs: Path, path: str) -> Path | None:
    """``path`` inside ``rootfs`` with symlinks resolved as if ``rootfs`` were ``/``; None if
    it does not exist or is not a regular file."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        comp = parts.pop(0)
        if comp == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(rootfs, *resolved, comp)
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if os.path.islink(candidate):
            hops += 1
            if hops > MAX_SYMLINKS:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        del st
        resolved.append(comp)
    final = Path(rootfs, *resolved)
    return final if final.is_file() and not final.is_symlink() else None


def _read_entries(rootfs: Path, path: str) -> list[list[str]] | None:
    f = resolve_in_root(rootfs, path)
    if f is None:
        return None
    with open(f, "rb") as fh:
        data = fh.read(MAX_ID_FILE_BYTES + 1)
    if len(data) > MAX_ID_FILE_BYTES:
        raise InvalidInput(f"image {path} is larger than {MAX_ID_FILE_BYTES} bytes")
    out = []
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        out.append(line.split(":"))
    return out


def _int(value: str) -> int | None:
    return int(value) if value.isascii() and value.isdigit() and int(value) < 2**32 else None


def _passwd(rootfs: Path) -> list[tuple[str, int, int]] | None:
    entries = _read_entries(rootfs, "/etc/passwd")
    if entries is None:
        return None
    out = []
    for e in entries:
        if len(e) >= 4 and (uid := _int(e[2])) is not None and (gid := _int(e[3])) is not None:
            out.append((e[0], uid, gid))
    return out


def _groups(rootfs: Path) -> list[tuple[str, int, list[str]]] | None:
    entries = _read_entries(rootfs, "/etc/group")
    if entries is None:
        return None
    out = []
    for e in entries:
        if len(e) >= 3 and (gid := _int(e[2])) is not None:
            members = [m for m in (e[3].split(",") if len(e) > 3 else []) if m]
            out.append((e[0], gid, members))
    return out


def resolve_user(user: str, rootfs: Path) -> tuple[int, int]:
    """(uid, gid) for an image's ``User`` value, as containerd's ``WithUser``."""
    if user == "":
        return 0, 0
    parts = user.split(":")
    if len(parts) == 1:
        uid = _int(parts[0])
        passwd = _passwd(rootfs)
        if uid is not None:
            for _name, u, g in passwd or []:
                if u == uid:
                    return u, g
            return uid, 0
        for name, u, g in passwd or []:
            if name == user:
                return u, g
        raise UserNotFound(f"image user {user!r}: no such user in the image's /etc/passwd")
    if len(parts) != 2:
        raise InvalidInput(f"invalid image user {user!r}")
    uname, gname = parts
    uid_n, gid_n = _int(uname), _int(gname)
    uid = uid_n if uid_n is not None else 0
    gid = gid_n if gid_n is not None else 0
    if uid_n is None:
        match = [u for n, u, _g in _passwd(rootfs) or [] if n == uname]
        if not match:
            raise UserNotFound(f"image user {user!r}: no user {uname!r} in /etc/passwd")
        uid = match[0]
    if gid_n is None:
        gmatch = [g for n, g, _m in _groups(rootfs) or [] if n == gname]
        if not gmatch:
            raise UserNotFound(f"image user {user!r}: no group {gname!r} in /etc/group")
        gid = gmatch[0]
    return uid, gid


def additional_gids(uid: int, gid: int, rootfs: Path) -> tuple[int, ...]:
    """Supplementary groups: those of /etc/group listing the user's name (excluding gid)."""
    names = [n for n, u, _g in _passwd(rootfs) or [] if u == uid][:1]
    if not names:
        return ()
    return tuple(sorted({g for _n, g, members in _groups(rootfs) or []
                         if names[0] in members and g != gid}))


def process_from_image(
    config: ImageConfig,
    rootfs: Path,
    *,
    args: list[str] | None = None,
    env: list[str] | None = None,
) -> ProcessConfig:
    """The process of a container of this image (``args`` replaces Cmd, ``env`` is ``-e``)."""
    cmd = list(args) if args else list(config.cmd)
    full_args = [*config.entrypoint, *cmd]
    if not full_args:
        raise InvalidInput("the image has no Entrypoint or Cmd and no command was given")
    base_env = list(config.env) if config.env else [DEFAULT_PATH_ENV]
    cwd = config.working_dir or "/"
    if not posixpath.isabs(cwd):
        cwd = "/" + cwd  # Docker treats a relative WorkingDir as relative to /
    uid, gid = resolve_user(config.user, rootfs)
    return ProcessConfig(
        args=tuple(full_args),
        env=tuple(replace_or_append_env(base_env, list(env or []))),
        cwd=cwd,
        uid=uid,
        gid=gid,
        additional_gids=additional_gids(uid, gid, rootfs),
    )
