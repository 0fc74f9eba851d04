"""``arca run`` pulls an image that is not in the store (``--pull missing|always|never``), from a
real ``docker-registry`` seen through a recording relay, so each test can tell exactly which
requests a run made: a run of a stored image makes none, ``--pull always`` on an unchanged image
fetches a manifest and no blob, a failed pull leaves no image and no container."""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Iterator

import pytest

from tests.support.arca_run import NEEDS_ROOT_RUNC_UMOCI, arca, arca_env, on_terminal
from tests.support.images import build_busybox_image, push
from tests.support.kbs_td import RecordingProxy, recording_proxy
from tests.support.registry import free_port, registry_available, run_registry, write_htpasswd

pytestmark = [
    pytest.mark.integration,
    NEEDS_ROOT_RUNC_UMOCI,
    pytest.mark.skipif(not registry_available(), reason="needs docker-registry and skopeo"),
]

_REQUEST = re.compile(rb"(GET|HEAD) (/v2/[^ ]*) HTTP/1\.1")


def requests(relay: RecordingProxy) -> list[str]:
    """The registry API requests clients sent through ``relay`` so far."""
    return [m.group(2).decode() for m in _REQUEST.finditer(relay.sent())]


def blob_requests(relay: RecordingProxy, since: int = 0) -> list[str]:
    return [r for r in requests(relay)[since:] if "/blobs/" in r]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    base = tmp_path_factory.mktemp("pull-img")
    v1 = build_busybox_image(base / "layout", "v1", files={"/etc/version": b"one\n"},
                             cmd=["cat", "/etc/version"])
    v2 = build_busybox_image(base / "layout", "v2", files={"/etc/version": b"two\n"},
                             cmd=["cat", "/etc/version"])
    return v1, v2


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, layouts: tuple[str, str]
             ) -> Iterator[RecordingProxy]:
    """An anonymous plain-HTTP registry holding arca/bb:v1, behind a recording relay."""
    v1, _ = layouts
    with run_registry(tmp_path_factory.mktemp("pull-reg")) as reg:
        push(v1, reg.host, "arca/bb:v1")
        host, port = reg.host.rsplit(":", 1)
        with recording_proxy((host, int(port))) as relay:
            yield relay


@pytest.fixture
def env(tmp_path: pathlib.Path) -> Iterator[dict[str, str]]:
    with arca_env(tmp_path, "apl-") as e:
        yield e


def images(env: dict[str, str]) -> list[str]:
    return [i["name"] for i in json.loads(arca(env, "image", "ls", "--json").stdout)]


def assert_nothing_left(env: dict[str, str]) -> None:
    """No image record, no container, no content: a refused pull leaves the store empty."""
    assert images(env) == []
    assert json.loads(arca(env, "ps", "-a", "--json").stdout) == []
    store = pathlib.Path(env["ARCA_ROOT"]) / "images"
    for sub in ("layers", "tmp"):
        assert not (store / sub).exists() or not any((store / sub).iterdir()), sub


def test_run_pulls_a_missing_image_then_runs_it_without_the_registry(
        registry: RecordingProxy, env: dict[str, str]) -> None:
    ref = f"{registry.host}/arca/bb:v1"
    before = len(requests(registry))
    res = arca(env, "run", "--rm", "--insecure", ref)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "one\n"  # the workload's output only: no pull progress on stdout
    assert "Traceback" not in res.stderr
    assert blob_requests(registry, before), "the image was pulled through the relay"
    assert images(env) == [ref]
    # in the store now: --pull missing (the default) asks the registry nothing, in a run that
    # takes the slow path (new command) and in one that reuses the run plan (same command)
    for _ in range(2):
        seen = len(registry.exchanges)
        for args in (["cat", "/etc/version"], []):
            res = arca(env, "run", "--rm", "--tee", "none", ref, *args)
            assert (res.returncode, res.stdout) == (0, "one\n"), res.stderr
        assert len(registry.exchanges) == seen, "no connection to the registry"


def test_pull_never_refuses_an_image_not_in_the_store(registry: RecordingProxy,
                                                      env: dict[str, str]) -> None:
    seen = len(registry.exchanges)
    res = arca(env, "run", "--rm", "--pull", "never", "--insecure",
               f"{registry.host}/arca/bb:v1")
    assert res.returncode == 125
    assert res.stderr.startswith("arca: error: image ") and "not in the store" in res.stderr
    assert res.stderr.count("\n") == 1
    assert len(registry.exchanges) == seen
    assert_nothing_left(env)
    res = arca(env, "run", "--pull", "sometimes", f"{registry.host}/arca/bb:v1")
    assert res.returncode == 125 and "--pull 'sometimes'" in res.stderr


def test_pull_always_on_an_unchanged_image_downloads_no_blob(
        registry: RecordingProxy, env: dict[str, str], layouts: tuple[str, str],
        tmp_path: pathlib.Path) -> None:
    ref = f"{registry.host}/arca/bb:v1"
    assert arca(env, "image", "pull", "-q", "--insecure", ref).returncode == 0
    blobs = pathlib.Path(env["ARCA_ROOT"]) / "images" / "blobs"
    mtimes = {p: p.stat().st_mtime_ns for p in blobs.rglob("*") if p.is_file()}
    before = len(requests(registry))
    res = arca(env, "run", "--rm", "--tee", "none", "--pull", "always", "--insecure", ref)
    assert (res.returncode, res.stdout) == (0, "one\n"), res.stderr
    asked = requests(registry)[before:]
    assert [r for r in asked if "/manifests/" in r], "the registry was asked"
    assert blob_requests(registry, before) == []
    assert {p: p.stat().st_mtime_ns for p in blobs.rglob("*") if p.is_file()} == mtimes
    # the tag moves to other content: --pull always fetches it, the next run shows it
    _, v2 = layouts
    host, port = registry.upstream
    push(v2, f"{host}:{port}", "arca/bb:v1")
    before = len(requests(registry))
    res = arca(env, "run", "--rm", "--tee", "none", "--pull", "always", "--insecure", ref)
    assert (res.returncode, res.stdout) == (0, "two\n"), res.stderr
    assert blob_requests(registry, before)
    # put v1 back for the other tests of this module
    v1, _ = layouts
    push(v1, f"{host}:{port}", "arca/bb:v1")


@pytest.mark.parametrize("fast", ["1", "0"])
def test_unreachable_registry_is_one_line_and_leaves_nothing(env: dict[str, str],
                                                             fast: str) -> None:
    ref = f"127.0.0.1:{free_port()}/arca/bb:v1"
    res = arca({**env, "ARCA_CLI_FASTPATH": fast}, "run", "--rm", "--insecure", ref)
    assert res.returncode == 125, res.stderr
    lines = [line for line in res.stderr.splitlines() if not line.startswith("registry ")]
    assert len(lines) == 1, res.stderr  # (plus --insecure's warning of the HTTPS fallback)
    assert lines[0].startswith(f"arca: error: image {ref!r} is not in the store, and cannot "
                               f"pull image {ref}: registry unreachable:")
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert_nothing_left(env)
    # without --insecure the same registry is refused over HTTPS, saying what to do
    res = arca(env, "run", "--rm", ref)
    assert res.returncode == 125
    assert f"cannot pull image {ref}: registry unreachable" in res.stderr
    assert "needs --insecure" in res.stderr
    assert_nothing_left(env)


def test_unknown_manifest_is_named(registry: RecordingProxy, env: dict[str, str]) -> None:
    ref = f"{registry.host}/arca/bb:nosuchtag"
    res = arca(env, "run", "--rm", "--insecure", ref)
    assert res.returncode == 125
    assert res.stderr.splitlines()[-1].startswith(
        f"arca: error: image {ref!r} is not in the store, and cannot pull image {ref}: "
        "manifest unknown: ")
    assert_nothing_left(env)


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory, layouts: tuple[str, str]
                  ) -> Iterator[str]:
    base = tmp_path_factory.mktemp("pull-auth")
    htpasswd = write_htpasswd(base / "htpasswd", "alice", "s3cret")
    with run_registry(base / "reg", htpasswd=htpasswd) as reg:
        push(layouts[0], reg.host, "private/bb:v1", creds="alice:s3cret")
        yield reg.host


def test_pull_from_a_registry_needing_basic_auth(auth_registry: str, env: dict[str, str],
                                                 tmp_path: pathlib.Path) -> None:
    plain = f"http://{auth_registry}/private/bb:v1"
    # no credentials: one line, unauthorized, nothing left
    res = arca(env, "run", "--rm", "--tee", "none", "--insecure", plain)
    assert res.returncode == 125
    assert res.stderr.splitlines()[-1].endswith(
        f"cannot pull image {auth_registry}/private/bb:v1: unauthorized: registry "
        f"{auth_registry} requires credentials (--creds)")
    assert_nothing_left(env)
    # wrong credentials
    res = arca(env, "run", "--rm", "--tee", "none", "--insecure", "--creds", "alice:nope", plain)
    assert res.returncode == 125 and ": unauthorized: " in res.stderr, res.stderr
    assert_nothing_left(env)
    # the same safety rule as `arca image pull`: credentials never follow an HTTPS->HTTP
    # fallback; only a registry named http://... gets them
    res = arca(env, "run", "--rm", "--tee", "none", "--insecure", "--creds", "alice:s3cret",
               f"{auth_registry}/private/bb:v1")
    assert res.returncode == 125 and "credentials were not sent" in res.stderr, res.stderr
    assert_nothing_left(env)
    res = arca(env, "run", "--rm", "--tee", "none", "--insecure", "--creds", "alice:s3cret",
               plain)
    assert (res.returncode, res.stdout) == (0, "one\n"), res.stderr
    assert images(env) == [f"{auth_registry}/private/bb:v1"]


def test_credentials_from_the_environment_and_docker_config(
        auth_registry: str, tmp_path: pathlib.Path) -> None:
    import base64

    plain = f"http://{auth_registry}/private/bb:v1"
    with arca_env(tmp_path / "a", "apl-") as env:
        res = arca({**env, "ARCA_REGISTRY_CREDS": "alice:s3cret"}, "run", "--rm", "--tee",
                   "none", "--insecure", plain)
        assert (res.returncode, res.stdout) == (0, "one\n"), res.stderr
    docker = tmp_path / "docker"
    docker.mkdir()
    (docker / "config.json").write_text(json.dumps({"auths": {auth_registry: {
        "auth": base64.b64encode(b"alice:s3cret").decode()}}}))
    with arca_env(tmp_path / "b", "apl-") as env:
        env.pop("ARCA_REGISTRY_CREDS", None)
        res = arca({**env, "DOCKER_CONFIG": str(docker)}, "run", "--rm", "--tee", "none",
                   "--insecure", plain)
        assert (res.returncode, res.stdout) == (0, "one\n"), res.stderr


def test_progress_goes_to_a_terminal_on_stderr_only(registry: RecordingProxy,
                                                    env: dict[str, str]) -> None:
    """With stderr on a terminal the pull shows progress there; stdout stays the workload's."""
    code, out, shown = on_terminal(env, "run", "--rm", "--tee", "none", "--insecure",
                                   f"{registry.host}/arca/bb:v1", timeout=120)
    assert (code, out) == (0, "one\n")
    assert "pulling " in shown and "layer " in shown, shown


def test_pull_progress_in_a_log_is_plain_lines(registry: RecordingProxy,
                                               env: dict[str, str]) -> None:
    """stderr not a terminal (a CI log): podman prints plain lines there, and so does arca --
    what is pulled, each layer as it arrives, the done line with totals and speed; no bar
    redrawn with carriage returns or escape codes. -q: none of it. Stored: nothing downloaded."""
    ref = f"{registry.host}/arca/bb:v1"
    res = arca(env, "pull", "--insecure", ref)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"{ref} sha256:")
    assert "\r" not in res.stderr and "\x1b" not in res.stderr, repr(res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if not ln.startswith("registry ")]
    layers = [ln for ln in lines if re.fullmatch(r"layer [0-9a-f]{12}: \d+\.\d MB done", ln)]
    assert lines[0] == f"pulling {ref}" and len(layers) == 2, res.stderr  # busybox + files
    assert re.fullmatch(r"done: 2 layers, \d+\.\d MB in \d+\.\d s \(\d+\.\d MB/s\)",
                        lines[-1]), res.stderr
    res = arca(env, "pull", "--insecure", ref)  # all stored: says so, downloads nothing
    assert res.returncode == 0
    assert res.stderr.splitlines()[-1] == ("done: nothing to download (all layers already "
                                           "in the store)"), res.stderr
    assert arca(env, "rmi", ref).returncode == 0
    assert arca(env, "image", "prune").returncode == 0
    # arca run's own pull: the same lines, before the workload's output; -q: none of them
    res = arca(env, "run", "--rm", "--tee", "none", "--insecure", ref)
    assert (res.returncode, res.stdout) == (0, "one\n"), res.stderr
    assert f"pulling {ref}" in res.stderr and "done: 2 layers" in res.stderr, res.stderr
    assert arca(env, "rmi", ref).returncode == 0
    assert arca(env, "image", "prune").returncode == 0
    res = arca(env, "pull", "-q", "--insecure", ref)
    assert res.returncode == 0
    assert [ln for ln in res.stderr.splitlines() if not ln.startswith("registry ")] == []
