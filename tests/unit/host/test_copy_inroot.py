"""``arca cp``'s resolution inside a container's root (:class:`arca.host.containers.copy.
InRoot`): symlinks, absolute or climbing with ``..``, stay in the root; loops end."""

from __future__ import annotations

import os
import pathlib

import pytest

from arca.host.containers.copy import CopyError, InRoot, Writer, copy_tree, walk_fd, walk_host


@pytest.fixture
def root(tmp_path: pathlib.Path) -> pathlib.Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc/shadow").write_text("inside\n")
    (tmp_path / "outside").write_text("outside\n")
    os.symlink("/etc/shadow", r / "abs")
    os.symlink("../../../../etc/shadow", r / "etc/climb")
    os.symlink("../outside", r / "rel-out")  # ../ of the root: the root itself
    os.symlink("loop", r / "loop")
    os.symlink(str(tmp_path), r / "hostdir")
    return r


def _read(root: pathlib.Path, path: str) -> str:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        parent, name, _ = InRoot(fd, "c").resolve(path)
        try:
            out = tmp = root.parent / "read-out"
            copy_tree(walk_fd(parent, name), Writer(os.open(root.parent, os.O_RDONLY),
                                                    tmp.name, "host"))
            text = out.read_text()
            out.unlink()
            return text
        finally:
            os.close(parent)
    finally:
        os.close(fd)


@pytest.mark.parametrize("path", ["/abs", "/etc/climb", "abs", "/../../etc/shadow",
                                  "/etc/../../../etc/./shadow"])
def test_symlinks_and_dotdot_resolve_inside(root: pathlib.Path, path: str) -> None:
    assert _read(root, path) == "inside\n"


def test_escapes_fail_inside(root: pathlib.Path) -> None:
    with pytest.raises(CopyError, match="no such file"):
        _read(root, "/rel-out")  # the root's own /outside: none
    with pytest.raises(CopyError, match="too many levels"):
        _read(root, "/loop")


def test_a_write_through_a_symlink_to_a_host_directory_stays_inside(
        root: pathlib.Path, tmp_path: pathlib.Path) -> None:
    src = tmp_path / "src.txt"
    src.write_text("x\n")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(CopyError, match="no such file"):
            InRoot(fd, "c").resolve("/hostdir/src.txt", must_exist=False)
        (root / tmp_path.relative_to("/")).mkdir(parents=True)
        parent, name, exists = InRoot(fd, "c").resolve("/hostdir/new.txt", must_exist=False)
        assert (name, exists) == ("new.txt", False)
        copy_tree(walk_host(str(src)), Writer(parent, name, "c"))
        os.close(parent)
    finally:
        os.close(fd)
    assert (root / tmp_path.relative_to("/") / "new.txt").read_text() == "x\n"
    assert not (tmp_path / "new.txt").exists()


def test_setuid_bits_are_not_copied(tmp_path: pathlib.Path) -> None:
    src = tmp_path / "suid"
    src.write_text("#!/bin/sh\n")
    os.chmod(src, 0o4755)
    copy_tree(walk_host(str(src)), Writer(os.open(tmp_path, os.O_RDONLY), "copy", "host"))
    assert (tmp_path / "copy").stat().st_mode & 0o7777 == 0o755
