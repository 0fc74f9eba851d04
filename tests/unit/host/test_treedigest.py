"""Tree digest: determinism, sensitivity to every hashed attribute, insensitivity to mtimes,
and the overlay cache (a real overlay mount, as root)."""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import subprocess
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.host import treedigest
from arca.host.treedigest import overlay_layers, rootfs_digest, tree_digest

log = logging.getLogger(__name__)
ROOT = os.geteuid() == 0


def make_tree(base: pathlib.Path) -> pathlib.Path:
    base.mkdir(parents=True)
    (base / "bin").mkdir()
    (base / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (base / "bin" / "tool").chmod(0o755)
    (base / "etc").mkdir()
    (base / "etc" / "conf").write_text("key=value\n")
    (base / "etc" / "link").symlink_to("conf")
    (base / "a-b").write_text("dash sorts before slash\n")
    (base / "empty").mkdir()
    os.mkfifo(base / "fifo")
    (base / os.fsdecode(b"caf\xe9-latin1")).write_bytes(b"non-utf8 name")
    return base


@pytest.fixture()
def tree(tmp_path: pathlib.Path) -> pathlib.Path:
    return make_tree(tmp_path / "t")


def test_deterministic_and_independent_of_location(tmp_path: pathlib.Path,
                                                   tree: pathlib.Path) -> None:
    d1 = tree_digest(tree)
    assert d1 == tree_digest(tree)
    assert d1.startswith("sha256:") and len(d1) == 71
    other = make_tree(tmp_path / "elsewhere" / "t2")
    assert tree_digest(other) == d1


def test_mtimes_and_atimes_do_not_matter(tree: pathlib.Path) -> None:
    before = tree_digest(tree)
    for p in [tree, *tree.rglob("*")]:
        os.utime(p, (12345, 67890), follow_symlinks=False)
    assert tree_digest(tree) == before


def _chown(p: pathlib.Path) -> None:
    os.chown(p, 1234, 5678)


MUTATIONS = {
    "content": lambda t: (t / "etc" / "conf").write_text("key=valuf\n"),
    "same-size-content": lambda t: (t / "bin" / "tool").write_bytes(b"#!/bin/sh\necho ho\n"),
    "mode": lambda t: (t / "etc" / "conf").chmod(0o600),
    "dir-mode": lambda t: (t / "empty").chmod(0o700),
    "setuid-bit": lambda t: (t / "bin" / "tool").chmod(0o4755),
    "symlink-target": lambda t: ((t / "etc" / "link").unlink(),
                                 (t / "etc" / "link").symlink_to("conf2")),
    "add-file": lambda t: (t / "etc" / "new").write_text(""),
    "add-empty-dir": lambda t: (t / "etc" / "newdir").mkdir(),
    "remove-file": lambda t: (t / "a-b").unlink(),
    "rename-file": lambda t: (t / "a-b").rename(t / "a-c"),
    "file-to-symlink": lambda t: ((t / "etc" / "conf").unlink(),
                                  (t / "etc" / "conf").symlink_to("link")),
    "fifo-to-file": lambda t: ((t / "fifo").unlink(), (t / "fifo").write_text("")),
}
if ROOT:
    MUTATIONS["owner"] = lambda t: _chown(t / "etc" / "conf")
    MUTATIONS["symlink-owner"] = lambda t: os.chown(t / "etc" / "link", 7, 7,
                                                    follow_symlinks=False)
    MUTATIONS["char-device-numbers"] = lambda t: os.mknod(
        t / "dev-null", 0o666 | 0o020000, os.makedev(1, 3))


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_every_attribute_changes_the_digest(tree: pathlib.Path, name: str) -> None:
    before = tree_digest(tree)
    MUTATIONS[name](tree)
    assert tree_digest(tree) != before, name


@pytest.mark.skipif(not ROOT, reason="mknod needs root")
def test_device_major_minor_are_hashed(tmp_path: pathlib.Path) -> None:
    digests = set()
    for i, (kind, dev) in enumerate([(0o020000, (1, 3)), (0o020000, (1, 5)),
                                     (0o060000, (1, 3)), (0o020000, (2, 3))]):
        t = tmp_path / f"d{i}"
        t.mkdir()
        os.mknod(t / "node", 0o600 | kind, os.makedev(*dev))
        digests.add(tree_digest(t))
    assert len(digests) == 4


def test_hard_links_hash_as_regular_files(tmp_path: pathlib.Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("same")
    os.link(a / "x", a / "y")
    (b / "x").write_text("same")
    (b / "y").write_text("same")
    assert tree_digest(a) == tree_digest(b)


def test_symlinks_are_never_followed(tmp_path: pathlib.Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("1")
    t = tmp_path / "t"
    t.mkdir()
    (t / "escape").symlink_to(outside)
    before = tree_digest(t)
    (outside / "secret").write_text("2")
    (outside / "more").write_text("3")
    assert tree_digest(t) == before


def test_root_must_be_a_directory(tmp_path: pathlib.Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError):
        tree_digest(tmp_path / "f")


def test_mountinfo_parsing_handles_escapes_and_stacked_mounts() -> None:
    info = (
        "45 27 0:39 / /a\\040b rw - overlay overlay rw,lowerdir=/l\\:x:/l2,upperdir=/u,"
        "workdir=/w\n"
        "46 27 0:40 / /c rw - overlay overlay rw,lowerdir=/x,upperdir=/u2,workdir=/w2\n"
        "47 27 0:41 / /c rw - tmpfs tmpfs rw\n"
        "48 27 0:42 / /d rw shared:1 - overlay overlay ro,lowerdir+=/p,lowerdir+=/q\n"
    )
    assert overlay_layers(pathlib.Path("/a b"), info) == (["/l:x", "/l2"], "/u")
    assert overlay_layers(pathlib.Path("/c"), info) is None
    assert overlay_layers(pathlib.Path("/d"), info) == (["/p", "/q"], None)
    assert overlay_layers(pathlib.Path("/nowhere"), info) is None


def test_large_tree_throughput_is_logged(tmp_path: pathlib.Path) -> None:
    t = tmp_path / "big"
    t.mkdir()
    chunk = os.urandom(1 << 20)
    for i in range(48):
        (t / f"blob{i}").write_bytes(chunk)
    for i in range(500):
        (t / f"small{i}").write_bytes(b"x" * i)
    start = time.perf_counter()
    tree_digest(t)
    elapsed = time.perf_counter() - start
    log.warning("tree_digest throughput: %.0f MB/s (48 MiB + 500 small files in %.3fs)",
                48 / elapsed, elapsed)


@pytest.fixture()
def overlay(tmp_path: pathlib.Path):
    if not ROOT or shutil.which("mount") is None:
        pytest.skip("overlay mounts need root")
    layers = [tmp_path / "l0", tmp_path / "l1"]
    make_tree(layers[0])
    layers[1].mkdir()
    (layers[1] / "app").write_text("layer 1\n")
    upper, work, merged = tmp_path / "u", tmp_path / "w", tmp_path / "rootfs"
    for d in (upper, work, merged):
        d.mkdir()

    def mount() -> None:
        opts = f"lowerdir={layers[1]}:{layers[0]},upperdir={upper},workdir={work}"
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)],
                       check=True)

    mount()
    state = {"layers": layers, "upper": upper, "merged": merged, "mount": mount}
    yield state
    subprocess.run(["umount", "-l", str(merged)], check=False)


def test_overlay_cache_hits_with_empty_upperdir(tmp_path: pathlib.Path, overlay,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    merged = overlay["merged"]
    first = rootfs_digest(merged, cache)
    assert first == tree_digest(merged)
    assert len(list(cache.iterdir())) == 1

    def no_hashing(_root: pathlib.Path) -> str:
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(treedigest, "tree_digest", no_hashing)
    assert rootfs_digest(merged, cache) == first


def test_overlay_cache_misses_when_a_layer_changes(tmp_path: pathlib.Path, overlay) -> None:
    cache = tmp_path / "cache"
    merged = overlay["merged"]
    first = rootfs_digest(merged, cache)
    subprocess.run(["umount", str(merged)], check=True)
    (overlay["layers"][1] / "added").write_text("new top-level entry\n")
    overlay["mount"]()
    second = rootfs_digest(merged, cache)
    assert second != first
    assert second == tree_digest(merged)
    assert len(list(cache.iterdir())) == 2


def test_overlay_with_a_written_upperdir_is_hashed(tmp_path: pathlib.Path, overlay) -> None:
    cache = tmp_path / "cache"
    merged = overlay["merged"]
    first = rootfs_digest(merged, cache)
    (merged / "etc" / "conf").write_text("changed through the container\n")
    second = rootfs_digest(merged, cache)
    assert second != first
    assert second == tree_digest(merged)


def test_plain_directory_is_hashed_without_cache(tmp_path: pathlib.Path,
                                                 tree: pathlib.Path) -> None:
    cache = tmp_path / "cache"
    assert rootfs_digest(tree, cache) == tree_digest(tree)
    assert not cache.exists()


_chars = st.text(alphabet=" -\\:,=/abc0123456789\n", max_size=60)
_mount_line = st.builds(
    lambda target, fs, opts: f"45 27 0:39 / {target} rw - {fs} {fs} {opts}",
    st.sampled_from(["/a", "/a\\040b", "/c"]), st.sampled_from(["overlay", "tmpfs"]),
    st.builds(lambda kv: ",".join(kv), st.lists(st.one_of(
        _chars, st.builds(lambda v: "lowerdir=" + v, _chars),
        st.builds(lambda v: "lowerdir+=" + v, _chars),
        st.builds(lambda v: "upperdir=" + v, _chars)), max_size=4)))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_chars, _mount_line), max_size=6), st.sampled_from(["/a", "/a b"]))
def test_fuzz_mountinfo_parser(lines: list[str], target: str) -> None:
    result = overlay_layers(pathlib.Path(target), "\n".join(lines))
    assert result is None or (isinstance(result[0], list) and all(result[0]))
