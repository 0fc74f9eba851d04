"""Layer unpacking: overlay-format output, whiteouts, and hostile archives refused."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arca.host.images.digest import Digest
from arca.host.images.errors import DigestMismatch, UnsafeArchive
from arca.host.images.mount import mount_overlay, umount
from arca.host.images.unpack import LayerUnpacker, symlink_escapes, unpack_layer

ROOT = os.geteuid() == 0


def entry(name: str, kind: str = "file", data: bytes = b"", mode: int = 0o644,
          link: str = "", uid: int = 0, gid: int = 0, pax: dict[str, str] | None = None
          ) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.mode, ti.uid, ti.gid, ti.mtime = mode, uid, gid, 1_700_000_000
    ti.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
               "link": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE,
               "blk": tarfile.BLKTYPE}[kind]
    if kind == "file":
        ti.size = len(data)
    ti.linkname = link
    if pax:
        ti.pax_headers = pax
    return ti, data


def make_tar(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return buf.getvalue()


def unpack(tmp: Path, entries: list[tuple[tarfile.TarInfo, bytes]], *, name: str = "layer",
           lowers: list[Path] | None = None, compression: str = "",
           diff_id: Digest | None = None) -> Path:
    raw = make_tar(entries)
    blob = {"": raw, "gzip": gzip.compress(raw) if compression == "gzip" else b"",
            "zstd": zstandard.ZstdCompressor().compress(raw) if compression == "zstd" else b""
            }[compression]
    (tmp / f"{name}.blob").write_bytes(blob)
    dest = tmp / name
    dest.mkdir()
    unpack_layer(tmp / f"{name}.blob", compression, dest, lowers or [],
                 diff_id or Digest.of(raw))
    return dest


# -- formats and digests ------------------------------------------------------------------------
@pytest.mark.parametrize("compression", ["", "gzip", "zstd"])
def test_unpacks_files_dirs_links_with_modes_and_owners(tmp_path: Path, compression: str) -> None:
    d = unpack(tmp_path, [
        entry("etc/", "dir", mode=0o755),
        entry("etc/passwd", data=b"root:x:0:0::/:/bin/sh\n", mode=0o644),
        entry("bin/", "dir", mode=0o755),
        entry("bin/busybox", data=b"\x7fELF", mode=0o4755, uid=0, gid=0),
        entry("bin/sh", "sym", link="/bin/busybox"),
        entry("bin/ls", "link", link="bin/busybox"),
        entry("home/app/", "dir", mode=0o700, uid=1000, gid=1000),
        entry("tmp/", "dir", mode=0o1777),
        entry("run/fifo", "fifo", mode=0o600),
    ], compression=compression)
    assert (d / "etc/passwd").read_bytes().startswith(b"root")
    assert stat.S_IMODE(os.lstat(d / "bin/busybox").st_mode) == 0o4755
    assert os.readlink(d / "bin/sh") == "/bin/busybox"
    assert os.lstat(d / "bin/ls").st_ino == os.lstat(d / "bin/busybox").st_ino
    assert stat.S_IMODE(os.lstat(d / "tmp").st_mode) == 0o1777
    assert stat.S_ISFIFO(os.lstat(d / "run/fifo").st_mode)
    if ROOT:
        st_ = os.lstat(d / "home/app")
        assert (st_.st_uid, st_.st_gid, stat.S_IMODE(st_.st_mode)) == (1000, 1000, 0o700)


def test_diff_id_mismatch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DigestMismatch, match="diff_id"):
        unpack(tmp_path, [entry("a", data=b"x")], diff_id=Digest.of(b"something else"))


def test_corrupt_compressed_stream_is_refused(tmp_path: Path) -> None:
    raw = gzip.compress(make_tar([entry("a", data=b"x" * 10000)]))
    blob = tmp_path / "b"
    blob.write_bytes(raw[: len(raw) // 2])
    (tmp_path / "d").mkdir()
    with pytest.raises((DigestMismatch, UnsafeArchive)):
        unpack_layer(blob, "gzip", tmp_path / "d", [], None)


# -- whiteouts ----------------------------------------------------------------------------------
@pytest.mark.skipif(not ROOT, reason="whiteouts and overlay mounts need root")
def test_whiteouts_and_opaque_dirs_apply_through_overlay(tmp_path: Path) -> None:
    low = unpack(tmp_path, [
        entry("keep", data=b"k"), entry("gone", data=b"g"),
        entry("dir/", "dir", mode=0o750), entry("dir/old", data=b"o"),
        entry("opq/", "dir"), entry("opq/hidden", data=b"h"),
        entry("tree/", "dir"), entry("tree/sub/", "dir"), entry("tree/sub/f", data=b"f"),
    ], name="low")
    up = unpack(tmp_path, [
        entry(".wh.gone"),
        entry("dir/new", data=b"n"),          # implicit parent: attributes of the lower dir
        entry("opq/", "dir"), entry("opq/.wh..wh..opq"), entry("opq/fresh", data=b"f"),
        entry(".wh.tree"),
    ], name="up", lowers=[low])
    gone = os.lstat(up / "gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert os.getxattr(up / "opq", "trusted.overlay.opaque") == b"y"
    assert stat.S_IMODE(os.lstat(up / "dir").st_mode) == 0o750
    merged = tmp_path / "m"
    mount_overlay(merged, [up, low], tmp_path / "u", tmp_path / "w")
    try:
        names = sorted(str(p.relative_to(merged)) for p in merged.rglob("*"))
    finally:
        umount(merged)
    assert names == ["dir", "dir/new", "dir/old", "keep", "opq", "opq/fresh"]


@pytest.mark.skipif(not ROOT, reason="needs root")
def test_hard_link_to_a_lower_layer_file_is_copied_up(tmp_path: Path) -> None:
    low = unpack(tmp_path, [entry("bin/", "dir"), entry("bin/tool", data=b"T", mode=0o755)],
                 name="low")
    up = unpack(tmp_path, [entry("bin/alias", "link", link="bin/tool")], name="up",
                lowers=[low])
    assert (up / "bin/alias").read_bytes() == b"T"
    assert stat.S_IMODE(os.lstat(up / "bin/alias").st_mode) == 0o755


# -- hostile archives ---------------------------------------------------------------------------
HOSTILE = {
    "absolute path": [entry("/etc/evil", data=b"x")],
    "dotdot": [entry("a/../../evil", data=b"x")],
    "dotdot at start": [entry("../evil", data=b"x")],
    "write through symlink": [entry("etc", "sym", link="/outside"), entry("etc/evil", data=b"x")],
    "write through relative symlink": [entry("d/", "dir"), entry("d/up", "sym", link="."),
                                       entry("d/l", "sym", link="../../../outside"),
                                       entry("d/l/evil", data=b"x")],
    "symlink escaping": [entry("a/b", "sym", link="../../../../etc/shadow")],
    "hard link escaping": [entry("evil", "link", link="../outside/secret")],
    "hard link absolute": [entry("evil", "link", link="/etc/shadow")],
    "hard link to missing": [entry("evil", "link", link="nothing/here")],
    "hard link through symlink": [entry("s", "sym", link="/"), entry("evil", "link",
                                                                     link="s/etc/shadow")],
    "trusted xattr": [entry("f", data=b"x",
                            pax={"SCHILY.xattr.trusted.overlay.redirect": "/etc"})],
    "whiteout of dotdot": [entry(".wh..."), ],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_entries_are_refused_and_nothing_escapes(tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    before = sorted(os.listdir(outside))
    work = tmp_path / "w"
    work.mkdir()
    with pytest.raises(UnsafeArchive):
        unpack(work, HOSTILE[case])
    assert sorted(os.listdir(outside)) == before
    assert not (tmp_path / "evil").exists() and not Path("/etc/evil").exists()


@pytest.mark.skipif(not ROOT, reason="needs root")
def test_lower_layer_symlinks_are_never_followed_to_the_host(tmp_path: Path) -> None:
    """A lower layer's `a -> /etc`, shadowed by a directory `a` in the upper layer, must not let
    a hard link `a/hostname` copy the host's /etc/hostname into the image."""
    low = unpack(tmp_path, [entry("a", "sym", link="/etc"), entry("r", "sym", link="/")],
                 name="low")
    with pytest.raises(UnsafeArchive, match="does not exist"):
        unpack(tmp_path, [entry("a/", "dir"), entry("y", "link", link="a/hostname")],
               name="up", lowers=[low])
    up = unpack(tmp_path, [entry("r/", "dir", mode=0o700), entry("r/tmp/x", data=b"x")],
                name="up2", lowers=[low])
    assert stat.S_IMODE(os.lstat(up / "r" / "tmp").st_mode) == 0o755  # not the host's 1777


def test_device_files_refused_when_unprivileged(tmp_path: Path) -> None:
    raw = make_tar([entry("dev/", "dir"), entry("dev/mem", "chr")])
    (tmp_path / "b").write_bytes(raw)
    dest = tmp_path / "d"
    dest.mkdir()
    up = LayerUnpacker(dest, [], privileged=False)
    with tarfile.open(tmp_path / "b") as tf, pytest.raises(UnsafeArchive, match="device"):
        up.apply(tf)


@pytest.mark.skipif(not ROOT, reason="mknod needs root")
def test_device_files_created_when_privileged(tmp_path: Path) -> None:
    ti, _ = entry("null", "chr", mode=0o666)
    ti.devmajor, ti.devminor = 1, 3
    d = unpack(tmp_path, [(ti, b"")])
    assert os.lstat(d / "null").st_rdev == os.makedev(1, 3)


def test_symlink_escape_rule() -> None:
    assert not symlink_escapes(["usr", "lib", "x"], "../../lib/x")
    assert symlink_escapes(["usr", "lib", "x"], "../../../lib/x")
    assert not symlink_escapes(["a"], "/../../etc")  # absolute: resolved inside the root
    assert symlink_escapes(["a"], "..")
    assert not symlink_escapes(["a", "b"], "c/../..")


# -- property: random archives never write outside the destination -----------------------------
NAMES = st.sampled_from(["a", "b", "..", ".", "", "/", ".wh.a", ".wh..wh..opq", "etc", "x y"])
PATHS = st.lists(NAMES, min_size=1, max_size=4).map("/".join)
KINDS = st.sampled_from(["file", "dir", "sym", "link", "fifo"])
TARGETS = st.one_of(PATHS, st.sampled_from(["/", "/etc", "../outside", "../../outside",
                                            "../../../outside/secret", "/tmp"]))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(PATHS, KINDS, TARGETS), min_size=1, max_size=8))
def test_random_archives_stay_inside(tmp_path_factory: pytest.TempPathFactory,
                                     items: list[tuple[str, str, str]]) -> None:
    base = tmp_path_factory.mktemp("fuzz")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    work = base / "work"
    work.mkdir()
    entries = [entry(p, k, data=b"data", link=t if k in ("sym", "link") else "")
               for p, k, t in items]
    try:
        d = unpack(work, entries)
    except UnsafeArchive:
        d = work / "layer"
    except Exception as e:  # noqa: BLE001
        from arca.wire.errors import ArcaError

        assert isinstance(e, ArcaError), f"unexpected {type(e).__name__}: {e}"
        d = work / "layer"
    assert sorted(os.listdir(outside)) == ["secret"]
    assert (outside / "secret").read_text() == "s"
    assert sorted(os.listdir(base)) == ["outside", "work"]
    # every regular file below the destination is really below it (no symlinked parents)
    for root, _dirs, files in os.walk(d):
        for f in files:
            assert os.path.realpath(os.path.join(root, f)).startswith(str(work)) or \
                os.path.islink(os.path.join(root, f))


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(compression=st.sampled_from(["", "gzip", "zstd"]),
       flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1,
                      max_size=4),
       cut=st.one_of(st.none(), st.integers(0, 10_000)))
def test_corrupted_layers_fail_cleanly(tmp_path_factory: pytest.TempPathFactory,
                                       compression: str, flips: list[tuple[int, int]],
                                       cut: int | None) -> None:
    from arca.wire.errors import ArcaError

    base = tmp_path_factory.mktemp("corrupt")
    raw = make_tar([entry("d/", "dir"), entry("d/f", data=b"hello" * 300),
                    entry("d/l", "sym", link="f")])
    blob = bytearray({"": raw, "gzip": gzip.compress(raw),
                      "zstd": zstandard.ZstdCompressor().compress(raw)}[compression])
    for pos, xor in flips:
        blob[pos % len(blob)] ^= xor
    if cut is not None:
        del blob[cut % len(blob):]
    (base / "b").write_bytes(bytes(blob))
    (base / "d").mkdir()
    try:
        unpack_layer(base / "b", compression, base / "d", [], Digest.of(raw))
    except ArcaError:
        return
    # accepted only when the uncompressed content still hashes to the diff_id
    assert (base / "d" / "d" / "f").read_bytes() == b"hello" * 300


# -- review: hostile numeric PAX fields --------------------------------------------------------
@pytest.mark.parametrize("pax", [{"mtime": "1e30"}, {"mtime": "nan"},
                                 {"uid": "99999999999999999999"},
                                 {"gid": "99999999999999999999"}])
def test_review_out_of_range_pax_numbers_are_unsafe_archive(tmp_path: Path,
                                                            pax: dict[str, str]) -> None:
    # Used to escape as OverflowError/ValueError (a traceback, not a refused layer).
    with pytest.raises(UnsafeArchive):
        unpack(tmp_path, [entry("f", data=b"x", pax=pax)])


@pytest.mark.skipif(not ROOT, reason="opaque directories need root")
def test_dir_replacing_a_file_replacing_a_lower_dir_is_opaque(tmp_path: Path) -> None:
    # Found by the differential test: in a flat unpack the file removed the lower directory
    # and its contents, so the directory that replaces the file must hide them.
    low = unpack(tmp_path, [entry("a/", "dir", mode=0o755), entry("a/old", data=b"o")],
                 name="low")
    up = unpack(tmp_path, [entry("a", data=b"f"), entry("a/", "dir", mode=0o755)],
                name="up", lowers=[low])
    assert os.getxattr(up / "a", "trusted.overlay.opaque") == b"y"
    # without a lower directory there is nothing to hide
    up2 = unpack(tmp_path, [entry("n", data=b"f"), entry("n/", "dir", mode=0o755)],
                 name="up2", lowers=[low])
    with pytest.raises(OSError):
        os.getxattr(up2 / "n", "trusted.overlay.opaque")


# -- hard links are what they name (issue 13, item 13) -------------------------------------------
# Each case: a hard link that, before, placed something a direct entry of the same type at the
# same name is refused for: an escaping symlink, or a file a whiteout/opaque directory deleted.
HARDLINK_BYPASSES = {
    "link to an escaping-from-here symlink": (
        [], [entry("a/b/", "dir"), entry("a/b/s", "sym", link="../../etc/shadow"),
             entry("evil", "link", link="a/b/s")]),
    "link to a link to such a symlink": (
        [], [entry("a/b/", "dir"), entry("a/b/s", "sym", link="../../x"),
             entry("a/b/h", "link", link="a/b/s"), entry("evil", "link", link="a/b/h")]),
    "link across layers to such a symlink": (
        [entry("a/b/", "dir"), entry("a/b/s", "sym", link="../../x")],
        [entry("evil", "link", link="a/b/s")]),
    "link into a directory whited out in this layer": (
        [entry("d/", "dir"), entry("d/secret", data=b"deleted")],
        [entry(".wh.d"), entry("evil", "link", link="d/secret")]),
    "link into a directory made opaque in this layer": (
        [entry("d/", "dir"), entry("d/secret", data=b"deleted")],
        [entry("d/", "dir"), entry("d/.wh..wh..opq"), entry("evil", "link", link="d/secret")]),
    "link to a file whited out in this layer": (
        [entry("secret", data=b"deleted")],
        [entry(".wh.secret"), entry("evil", "link", link="secret")]),
    "link through a directory whited out in a middle layer": (
        [entry("d/", "dir"), entry("d/secret", data=b"deleted")],
        [entry(".wh.d")],
        [entry("evil", "link", link="d/secret")]),
}


@pytest.mark.skipif(not ROOT, reason="whiteouts and opaque directories need root")
@pytest.mark.parametrize("case", sorted(HARDLINK_BYPASSES))
def test_hard_links_cannot_bypass_the_entry_rules(tmp_path: Path, case: str) -> None:
    *lower_layers, top = HARDLINK_BYPASSES[case]
    lowers: list[Path] = []
    for i, layer in enumerate(lower_layers):
        lowers.insert(0, unpack(tmp_path, layer, name=f"low{i}", lowers=list(lowers)))
    before = {p: sorted(os.listdir(p)) for p in lowers}
    with pytest.raises(UnsafeArchive, match="escapes the root|does not exist"):
        unpack(tmp_path, top, name="up", lowers=lowers)
    assert {p: sorted(os.listdir(p)) for p in lowers} == before


@pytest.mark.skipif(not ROOT, reason="needs root")
def test_hard_links_resolve_to_what_they_name_across_layers(tmp_path: Path) -> None:
    """Links to symlinks, fifos and links in a lower layer are copied up as what they name;
    a link to a symlink that stays inside the root from its own name is kept."""
    low = unpack(tmp_path, [entry("bin/", "dir"), entry("bin/tool", data=b"T", mode=0o755),
                            entry("bin/sh", "sym", link="tool"), entry("bin/l", "link",
                                                                       link="bin/tool"),
                            entry("p", "fifo", mode=0o640)], name="low")
    up = unpack(tmp_path, [entry("bin/sh2", "link", link="bin/sh"),
                           entry("bin/l2", "link", link="bin/l"),
                           entry("p2", "link", link="p"),
                           entry("bin/sh3", "link", link="bin/sh2")], name="up", lowers=[low])
    assert os.readlink(up / "bin/sh2") == "tool" and os.readlink(up / "bin/sh3") == "tool"
    assert os.lstat(up / "bin/sh3").st_ino == os.lstat(up / "bin/sh2").st_ino
    assert (up / "bin/l2").read_bytes() == b"T"
    st_ = os.lstat(up / "p2")
    assert stat.S_ISFIFO(st_.st_mode) and stat.S_IMODE(st_.st_mode) == 0o640
