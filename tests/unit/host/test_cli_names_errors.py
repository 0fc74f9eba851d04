"""What a podman user expects of names and errors: a short name finds the image pulled under
its registry name, a loaded image gets a registry-style name, ``arca kbs admin`` takes its
options anywhere and from the environment, and bad input is one line, never a traceback."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from arca.cli.kbs_cmd import hoist_admin
from arca.cli.main import NEEDS_ROOT, describe_os_error, main
from arca.host.images.errors import ImageNotFound
from arca.host.images.ingest import local_name
from arca.host.images.store import ImageRecord, _short_name_match
from arca.kbs.admin_client import keygen
from arca.kbs.config import load
from arca.wire.errors import ConfigError


def rec(name: str) -> ImageRecord:
    return ImageRecord(name, "sha256:" + "1" * 64, "sha256:" + "2" * 64, (), "", "linux/amd64")


@pytest.mark.parametrize(("ref", "names", "want"), [
    ("app:v1", ["127.0.0.1:5000/app:v1"], "127.0.0.1:5000/app:v1"),
    ("app:v1", ["localhost/app:v1", "127.0.0.1:5000/other:v1"], "localhost/app:v1"),
    ("app", ["registry.example/team/app:latest"], "registry.example/team/app:latest"),
    ("team/app:v2", ["registry.example/team/app:v2"], "registry.example/team/app:v2"),
    ("app:v1", ["127.0.0.1:5000/app:v2"], None),  # another tag
    ("app:v1", ["127.0.0.1:5000/myapp:v1"], None),  # a path component must match whole
    ("127.0.0.1:5000/app:v1", ["localhost/app:v1"], None),  # a registry: exact names only
    ("app:v1", ["oci:/some/layout:v1"], None),  # legacy unparseable names are skipped
])
def test_short_names(ref: str, names: list[str], want: str | None) -> None:
    hit = _short_name_match(ref, [rec(n) for n in names])
    assert (hit.name if hit else None) == want


def test_ambiguous_short_name_is_refused() -> None:
    with pytest.raises(ImageNotFound, match="ambiguous: a.example/app:v1, b.example/app:v1"):
        _short_name_match("app:v1", [rec("a.example/app:v1"), rec("b.example/app:v1")])


@pytest.mark.parametrize(("repo", "tag", "want"), [
    ("app", "v1", "localhost/app:v1"),
    ("My Layout", None, "localhost/my-layout:latest"),
    ("x", "quay.io/team/app:1.0", "quay.io/team/app:1.0"),
    ("x", "busybox:1.36", "localhost/busybox:1.36"),
    ("x", "team/app:2", "localhost/team/app:2"),
    ("...", "v1", "localhost/image:v1"),
])
def test_loaded_image_names(repo: str, tag: str | None, want: str) -> None:
    assert local_name(repo, tag) == want


@pytest.mark.parametrize(("argv", "want"), [
    (["kbs", "admin", "set-resource", "a/b/c", "--file", "f", "--url", "U", "--admin-key=K"],
     ["kbs", "admin", "--url", "U", "--admin-key=K", "set-resource", "a/b/c", "--file", "f"]),
    (["kbs", "admin", "--url", "U", "get-policy", "resource", "--cacert", "C"],
     ["kbs", "admin", "--url", "U", "--cacert", "C", "get-policy", "resource"]),
    (["kbs", "admin", "set-reference-value", "n", "--", "--url"],
     ["kbs", "admin", "set-reference-value", "n", "--", "--url"]),
    (["kbs", "serve", "--url", "x"], ["kbs", "serve", "--url", "x"]),
])
def test_admin_options_anywhere(argv: list[str], want: list[str]) -> None:
    assert hoist_admin(argv) == want


def test_admin_help_needs_no_credentials_and_missing_ones_are_named(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("ARCA_KBS_URL", "ARCA_KBS_ADMIN_KEY", "ARCA_KBS_CACERT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(SystemExit) as e:
        main(["kbs", "admin", "set-resource", "--help"])
    assert e.value.code == 0 and "--file" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["kbs", "admin", "get-reference-values"])
    assert e.value.code == 125
    assert capsys.readouterr().err == ("arca: error: arca kbs admin needs the KBS URL: --url "
                                       "URL or $ARCA_KBS_URL\n")
    monkeypatch.setenv("ARCA_KBS_URL", "http://127.0.0.1:9")
    with pytest.raises(SystemExit) as e:
        main(["kbs", "admin", "get-reference-values"])
    assert "needs the admin private key: --admin-key FILE or $ARCA_KBS_ADMIN_KEY" in \
        capsys.readouterr().err


def test_keygen_into_a_missing_directory(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match=r"directory .*/nope does not exist"):
        keygen(tmp_path / "nope" / "admin")
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize(("line", "msg"), [
    ('workers = "two"', "workers must be an integer, not 'two'"),
    ("listen = 5", "listen must be a string, not 5"),
    ("insecure_http = 1", "insecure_http must be true or false, not 1"),
    ("workers = true", "workers must be an integer, not True"),
    ('trust_sim_root = [1]', "trust_sim_root must be a list of strings"),
])
def test_kbs_config_value_of_the_wrong_type(tmp_path: pathlib.Path, line: str, msg: str) -> None:
    cfg = tmp_path / "kbs.toml"
    cfg.write_text(f'data_dir = "{tmp_path}"\n{line}\n')
    with pytest.raises(ConfigError, match=msg):
        load(str(cfg), {})


def test_os_errors_are_one_line_and_non_root_is_told_why() -> None:
    err = PermissionError(13, "Permission denied", "/var/lib/arca")
    msg = describe_os_error(err)
    assert msg.startswith("Permission denied: /var/lib/arca")
    assert (NEEDS_ROOT in msg) == (os.geteuid() != 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="drops to nobody")
def test_non_root_gets_one_line_and_125(tmp_path: pathlib.Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCA_")}
    res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          sys.executable, "-m", "arca.cli.main", "images"],
                         env={**env, "ARCA_ROOT": str(tmp_path / "root-owned" / "x")},
                         capture_output=True, text=True, cwd="/", timeout=60)
    assert res.returncode == 125, res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "Permission denied" in res.stderr and "arca needs root" in res.stderr
