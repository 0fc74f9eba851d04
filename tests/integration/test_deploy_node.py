"""Node set-up for Kubernetes: ``deploy/node/install.sh`` and the containerd handlers of
``deploy/containerd/arca.toml``, for real.

``install.sh`` runs into a temporary prefix (a venv installed from this checkout, with PyPI
for dependencies, as on a fresh node) and merges the handlers into a containerd config that
looks like Debian's (a CRI section of its own). A real containerd with the CRI plugin enabled
then starts from that config: the CRI plugin must load, list the ``arca-*`` handlers with the
installed binaries, and keep the node's own CRI settings. The installed runtime answers
``--version`` and ``state`` of an unknown id like runc, and ``--uninstall`` puts everything
back.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import tomllib

import pytest

from tests.support.containerd import containerd_available, run_containerd
from tests.support.images import build_busybox_image, push
from tests.support.registry import registry_available, run_registry

REPO = pathlib.Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "node" / "install.sh"
DROPIN = REPO / "deploy" / "containerd" / "arca.toml"
HANDLERS = ("arca-sim", "arca-tdx", "arca-snp", "arca-sgx")
CRI = "io.containerd.grpc.v1.cri"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (containerd_available() and shutil.which("runc")
                            and shutil.which("cc")),
                       reason="needs root, containerd, runc and a C compiler"),
]


def install(prefix: pathlib.Path, etc: pathlib.Path, *extra: str,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["bash", str(INSTALL), "--prefix", str(prefix), "--etc", str(etc),
                          *extra], capture_output=True, text=True, timeout=600)
    if check and res.returncode != 0:
        raise AssertionError(f"install.sh failed ({res.returncode}): {res.stderr[-3000:]}")
    return res


def snapshot(*roots: pathlib.Path) -> dict[str, tuple[int, str]]:
    """Every file and symlink below ``roots`` with its mtime (ns) and content digest."""
    out: dict[str, tuple[int, str]] = {}
    for root in roots:
        for dirpath, dirnames, files in os.walk(root):
            dirnames[:] = [d for d in dirnames if d != "venv"]  # pip's own business
            for name in files:
                p = pathlib.Path(dirpath, name)
                st = p.lstat()
                body = os.readlink(p) if p.is_symlink() else hashlib.sha256(
                    p.read_bytes()).hexdigest()
                out[str(p)] = (st.st_mtime_ns, body)
    return out


def dump(conf: pathlib.Path) -> dict:
    res = subprocess.run(["containerd", "--config", str(conf), "config", "dump"],
                         capture_output=True, text=True, timeout=60, check=True)
    return tomllib.loads(res.stdout)


def runtimes(cfg: dict) -> dict:
    return cfg["plugins"][CRI]["containerd"]["runtimes"]


# The CRI section Debian 12's containerd package ships in /etc/containerd/config.toml.
DEBIAN_CRI = f"""
[plugins."{CRI}".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "/etc/cni/net.d"
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory):
    """One install (it takes ~15 s): prefix, etc dir, the first run's output."""
    tmp = tmp_path_factory.mktemp("deploy-node")
    prefix, etc = tmp / "opt" / "arca", tmp / "etc"
    (etc / "containerd").mkdir(parents=True)
    original = "version = 2\n" + DEBIAN_CRI
    (etc / "containerd" / "config.toml").write_text(original)
    first = install(prefix, etc)
    yield prefix, etc, first, original
    install(prefix, etc, "--uninstall", check=False)


@pytest.mark.slow
def test_install_produces_a_working_runtime(installed) -> None:
    prefix, etc, first, _ = installed
    assert "installed arca into" in first.stdout
    assert json.loads((etc / "arca" / "runtime.json").read_text()) == {
        "runc": shutil.which("runc"), "default_tee": "none"}
    rt = prefix / "bin" / "arca-runtime"
    # The C front end (an ELF binary), not the slow Python fallback.
    assert rt.read_bytes()[:4] == b"\x7fELF"
    ver = subprocess.run([str(rt), "--version"], capture_output=True, text=True, timeout=60)
    assert ver.returncode == 0, ver.stderr
    assert ver.stdout.startswith("arca-runtime version ") and "runc version" in ver.stdout
    for handler in HANDLERS:
        wrapper = prefix / "bin" / f"arca-runtime-{handler.removeprefix('arca-')}"
        res = subprocess.run([str(wrapper), "--root", str(prefix / "no-state"), "state",
                              "no-such-container"], capture_output=True, text=True, timeout=60)
        # runc's own answer and exit status, which containerd's shim reports as is.
        assert res.returncode == 1
        assert 'level=error msg="container does not exist"' in res.stderr, res.stderr
    arca = subprocess.run([str(prefix / "bin" / "arca"), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert arca.returncode == 0 and "kbs" in arca.stdout


@pytest.mark.slow
def test_wrapper_sets_the_handler_tee(installed, tmp_path: pathlib.Path) -> None:
    """arca-runtime-tdx makes ``tdx`` the default TEE: a bundle without ``io.arca.tee`` is
    refused with the runtime's clear error (no TDX support in this runtime), not run by plain
    runc; the same bundle through the plain front end (default ``none``) gets to runc."""
    prefix, *_ = installed
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    spec = {"ociVersion": "1.0.2", "process": {"args": ["/bin/true"], "cwd": "/",
            "user": {"uid": 0, "gid": 0}}, "root": {"path": "rootfs"}, "annotations": {}}
    (bundle / "config.json").write_text(json.dumps(spec))
    env = {**os.environ, "ARCA_ROOT": str(tmp_path / "ar"), "ARCA_RUN": str(tmp_path / "run")}
    res = subprocess.run([str(prefix / "bin" / "arca-runtime-tdx"), "--root",
                          str(tmp_path / "state"), "create", "--bundle", str(bundle), "c1"],
                         capture_output=True, text=True, timeout=60, env=env, cwd=bundle)
    assert res.returncode != 0
    assert "'tdx'" in res.stderr and "not available" in res.stderr, res.stderr


@pytest.mark.slow
def test_install_is_idempotent(installed) -> None:
    prefix, etc, _, _ = installed
    before = snapshot(prefix, etc)
    again = install(prefix, etc)
    assert "up to date" in again.stdout and "merged" not in again.stdout
    assert snapshot(prefix, etc) == before


@pytest.mark.slow
def test_merged_config_keeps_the_node_settings_and_adds_the_handlers(installed) -> None:
    prefix, etc, _, _ = installed
    cfg = dump(etc / "containerd" / "config.toml")
    cri = cfg["plugins"][CRI]
    assert cri["cni"]["bin_dir"] == "/usr/lib/cni"  # Debian's own setting survives
    rts = runtimes(cfg)
    assert cri["containerd"]["default_runtime_name"] in rts  # else CRI refuses to load
    for handler in HANDLERS:
        rt = rts[handler]
        assert rt["runtime_type"] == "io.containerd.runc.v2"
        assert rt["pod_annotations"] == ["io.arca.*"]
        assert rt["container_annotations"] == ["io.arca.*"]
        binary = pathlib.Path(rt["options"]["BinaryName"])
        assert binary == prefix / "bin" / f"arca-runtime-{handler.removeprefix('arca-')}"
        assert os.access(binary, os.X_OK)


def test_plain_import_would_lose_the_node_cri_settings(tmp_path: pathlib.Path) -> None:
    """Why install.sh merges rather than `imports`: containerd replaces the whole CRI section
    with an imported one. If this ever starts failing, containerd merges imports properly and
    the drop-in could be imported as is."""
    conf = tmp_path / "config.toml"
    conf.write_text(f'version = 2\nimports = ["{DROPIN}"]\n' + DEBIAN_CRI)
    cfg = dump(conf)
    assert "arca-sim" in runtimes(cfg)
    assert cfg["plugins"][CRI]["cni"]["bin_dir"] != "/usr/lib/cni"


@pytest.mark.slow
def test_real_containerd_loads_cri_with_the_handlers(installed, tmp_path: pathlib.Path) -> None:
    prefix, _, _, _ = installed
    etc = tmp_path / "etc"

    def merge(conf: pathlib.Path) -> None:
        # The test's isolated config plus Debian's CRI section, then install.sh's merge.
        conf.write_text(conf.read_text() + DEBIAN_CRI)
        install(prefix, etc)

    # install.sh edits ETC/containerd/config.toml: make that the instance's config file.
    with run_containerd(etc / "containerd", enable_cri=True, before_start=merge) as ctrd:
        plugins = ctrd.ctr("plugins", "ls").stdout
        cri = [ln for ln in plugins.splitlines() if f" {CRI.rsplit('.', 1)[1]} " in ln
               and "io.containerd.grpc.v1" in ln]
        assert cri and cri[0].split()[-1] == "ok", plugins
        cfg = dump(ctrd.root / "config.toml")
        for handler in HANDLERS:
            assert handler in runtimes(cfg)


@pytest.mark.slow
def test_uninstall_restores_the_node(tmp_path: pathlib.Path, installed) -> None:
    """A second, separate install (sharing pip's cache) so the module's install survives."""
    prefix, etc = tmp_path / "opt" / "arca", tmp_path / "etc"
    (etc / "containerd").mkdir(parents=True)
    original = "version = 2\n" + DEBIAN_CRI
    (etc / "containerd" / "config.toml").write_text(original)
    install(prefix, etc)
    assert (prefix / "bin" / "arca-runtime").exists()
    install(prefix, etc, "--uninstall")
    assert not prefix.exists()
    assert not (etc / "arca").exists()
    assert (etc / "containerd" / "config.toml").read_text() == original
    assert sorted(os.listdir(etc / "containerd")) == ["config.toml"]
    # Uninstalling twice is harmless; a prefix this script did not make is never removed.
    install(prefix, etc, "--uninstall")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    res = install(foreign, etc, "--uninstall", check=False)
    assert res.returncode != 0 and "not made by this script" in res.stderr
    assert foreign.exists()


def test_install_refuses_bad_options(tmp_path: pathlib.Path) -> None:
    for args, msg in ((["--prefix", "relative"], "absolute"),
                      (["--frobnicate"], "unknown option"),
                      (["--prefix", str(tmp_path / "a b")], "spaces")):
        res = subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True,
                             timeout=60)
        assert res.returncode != 0 and msg in res.stderr, res.stderr
    etc = tmp_path / "etc"
    (etc / "containerd").mkdir(parents=True)
    (etc / "containerd" / "config.toml").write_text('[plugins.cri]\n')  # version 1
    res = install(tmp_path / "p", etc, check=False)
    assert res.returncode != 0 and "not a version 2" in res.stderr
    assert not (tmp_path / "p").exists()


@pytest.mark.slow
@pytest.mark.skipif(not registry_available(), reason="needs docker-registry")
def test_installed_runtime_runs_a_sim_td_under_containerd(installed,
                                                          tmp_path: pathlib.Path) -> None:
    """The installed copy (not this checkout's venv) does the whole job: the ``arca-sim``
    wrapper puts a container without any Arca annotation into a sim TD (its own sim
    platform daemon, guest runtime built from the installed package); the plain front end
    (default TEE ``none``) passes the same image straight through to runc."""
    from arca.host.simtee import client

    prefix, *_ = installed
    env_vars = {"ARCA_ROOT": str(tmp_path / "arca-root"),
                "ARCA_RUN": tempfile.mkdtemp(prefix="arn-", dir="/tmp")}
    mp = pytest.MonkeyPatch()
    for k, v in env_vars.items():
        mp.setenv(k, v)
    layout = tmp_path / "layout"
    build_busybox_image(layout, "probe", cmd=["sh", "-c", "cat /run/arca/evidence.json "
                                              "2>/dev/null || echo plain"])
    try:
        with run_registry(tmp_path / "registry") as reg, \
                run_containerd(tmp_path / "ctrd", env=env_vars) as ctrd:
            image = push(f"{layout}:probe", reg.host, "probe:latest")
            ctrd.pull_plain_http(image)
            runs = {}
            for name in ("arca-runtime-sim", "arca-runtime"):
                res = ctrd.ctr("run", "--rm", "--net-host",
                               *ctrd.run_args(str(prefix / "bin" / name)), image,
                               f"probe-{name}", check=False, timeout=120)
                assert res.returncode == 0, res.stderr
                runs[name] = res.stdout.strip()
            doc = json.loads(runs["arca-runtime-sim"])
            assert doc["tee"] == "sim" and doc["evidence"]
            assert runs["arca-runtime"] == "plain"
    finally:
        client.stop()
        mp.undo()
        shutil.rmtree(env_vars["ARCA_RUN"], ignore_errors=True)
