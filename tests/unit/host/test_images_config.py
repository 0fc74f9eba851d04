"""The process of an image as containerd's ctr derives it (args, env, cwd, user)."""

from __future__ import annotations

from pathlib import Path

import pytest

from arca.host.imageconfig import (
    DEFAULT_PATH_ENV,
    UserNotFound,
    process_from_image,
    replace_or_append_env,
    resolve_user,
)
from arca.host.images.manifest import ImageConfig


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\n# comment\napp:x:1000:1001::/:/x\n"
                                "svc:x:2000:2000::/:/x\n")
    (etc / "group").write_text("root:x:0:\napp:x:1001:\nstaff:x:50:app,svc\nwheel:x:10:app\n")
    return tmp_path


@pytest.mark.parametrize("user,expected", [
    ("", (0, 0)),
    ("app", (1000, 1001)),
    ("1000", (1000, 1001)),
    ("4242", (4242, 0)),          # numeric uid not in passwd: gid 0
    ("app:staff", (1000, 50)),
    ("app:7", (1000, 7)),
    ("5:6", (5, 6)),
    ("4242:staff", (4242, 50)),
])
def test_user_resolution_matches_containerd(rootfs: Path, user: str,
                                            expected: tuple[int, int]) -> None:
    assert resolve_user(user, rootfs) == expected


@pytest.mark.parametrize("user", ["nobody", "app:nogroup", "ghost:0"])
def test_unknown_names_are_errors(rootfs: Path, user: str) -> None:
    with pytest.raises(UserNotFound):
        resolve_user(user, rootfs)


def test_passwd_through_symlink_resolves_inside_rootfs(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "passwd").write_text("u:x:7:8::/:/x\n")
    (tmp_path / "etc" / "passwd").symlink_to("/data/passwd")  # absolute: inside the rootfs
    assert resolve_user("u", tmp_path) == (7, 8)
    (tmp_path / "etc" / "group").symlink_to("/etc/group-missing")
    assert resolve_user("7", tmp_path) == (7, 8)


def test_no_passwd_numeric_user_gets_gid_0(tmp_path: Path) -> None:
    assert resolve_user("33", tmp_path) == (33, 0)
    with pytest.raises(UserNotFound):
        resolve_user("www", tmp_path)


def cfg(**kw: object) -> ImageConfig:
    return ImageConfig(os="linux", architecture="amd64", diff_ids=(), **kw)  # type: ignore[arg-type]


def test_process_defaults_and_overrides(rootfs: Path) -> None:
    p = process_from_image(cfg(entrypoint=("/entry",), cmd=("a", "b")), rootfs)
    assert p.args == ("/entry", "a", "b") and p.cwd == "/" and p.env == (DEFAULT_PATH_ENV,)
    p = process_from_image(cfg(entrypoint=("/entry",), cmd=("a",), env=("X=1", "PATH=/p"),
                               working_dir="/w", user="app"), rootfs,
                           args=["z"], env=["X=2", "Y=3"])
    assert p.args == ("/entry", "z")
    assert p.env == ("X=2", "PATH=/p", "Y=3")
    assert (p.uid, p.gid, p.cwd) == (1000, 1001, "/w")
    assert p.additional_gids == (10, 50)


def test_env_rules() -> None:
    assert replace_or_append_env(["A=1", "B=2"], ["B=3", "C=4", "A"]) == ["B=3", "C=4"]


def test_no_command_is_an_error(rootfs: Path) -> None:
    from arca.wire.errors import InvalidInput

    with pytest.raises(InvalidInput, match="no Entrypoint or Cmd"):
        process_from_image(cfg(), rootfs)


# -- fuzz: /etc/passwd, /etc/group and User come from the (untrusted) image ----------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from arca.wire.errors import InvalidInput  # noqa: E402

LINE = st.lists(st.one_of(st.sampled_from(["app", "root", "0", "1000", "x", "", "-1",
                                           "99999999999", "a,b", "#"]),
                          st.text(max_size=6)), max_size=6).map(":".join)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(passwd=st.lists(LINE, max_size=5).map("\n".join),
       group=st.lists(LINE, max_size=5).map("\n".join),
       user=st.one_of(st.sampled_from(["app", "0", "1000", "app:app", "0:0", "a:b:c", ":",
                                       "1000:root", "+5", "-1"]), st.text(max_size=10)))
def test_fuzz_user_resolution(tmp_path_factory: pytest.TempPathFactory, passwd: str,
                              group: str, user: str) -> None:
    root = tmp_path_factory.mktemp("fz")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text(passwd, errors="surrogateescape")
    (root / "etc" / "group").write_text(group, errors="surrogateescape")
    try:
        uid, gid = resolve_user(user, root)
    except InvalidInput:
        return
    assert 0 <= uid < 2**32 and 0 <= gid < 2**32
