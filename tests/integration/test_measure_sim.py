"""``arca measure`` equals the measurement in the evidence of a running container of the image,
whether it runs through ``arca run`` or through containerd (``ctr run`` + ``arca-runtime``);
verified with the sim verifier against the sim root."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

from arca.host.images import ImageStore, pull
from arca.host.measure import measure
from arca.verifier.base import Expected
from arca.verifier.sim import SimVerifier
from tests.support.containerd import containerd_available, run_containerd
from tests.support.images import build_busybox_image, push
from tests.support.registry import registry_available, run_registry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (registry_available() and os.geteuid() == 0),
                       reason="needs root, runc, umoci and docker-registry"),
]

BIN = pathlib.Path(sys.executable).parent
EVIDENCE_CMD = ["/bin/cat", "/run/arca/evidence.json"]
INIT_DATA = b'version = "0.1.0"\nalgorithm = "sha256"\n\n[data]\nagent = "kbs_timeout = 5.0"\n'


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("measure")
    # A short ARCA_RUN: per-TD unix sockets live below it and sun_path holds only 108 bytes.
    short_run = tempfile.mkdtemp(prefix="arm-", dir="/tmp")
    env = {"ARCA_ROOT": str(tmp / "root"), "ARCA_RUN": short_run}
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    layout = tmp / "layout"
    build_busybox_image(layout, "evidence", cmd=EVIDENCE_CMD, env=["GREETING=hello"],
                        workdir="/tmp", user="app")
    build_busybox_image(layout, "tampered", cmd=EVIDENCE_CMD, env=["GREETING=hello"],
                        workdir="/tmp", user="app", files={"/etc/motd": b"tampered\n"})
    from arca.host.simtee import client

    try:
        yield tmp, layout, {**os.environ, **env}
    finally:
        client.stop()
        mp.undo()
        shutil.rmtree(short_run, ignore_errors=True)


def evidence_claims(stdout: str, expected_init: bytes | None = None) -> dict:
    from arca.host.simtee import locations

    doc = json.loads(stdout)
    verifier = SimVerifier([locations.root_cert_path().read_bytes()])
    claims = verifier.verify(base64.b64decode(doc["evidence"]),
                             expected=Expected(init_data_hash=expected_init))
    return claims.values


def arca_run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "arca"), "run", "--rm", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_measure_equals_evidence_of_arca_run(world) -> None:  # type: ignore[no-untyped-def]
    _, layout, env = world
    image = f"oci:{layout}:evidence"
    res = measure(image, "sim")
    assert res.descriptor.process.args == tuple(EVIDENCE_CMD)
    assert (res.descriptor.process.uid, res.descriptor.process.cwd) == (1000, "/tmp")
    run = arca_run(env, image)
    assert run.returncode == 0, run.stderr
    claims = evidence_claims(run.stdout)
    assert claims["measurement"] == res.measurement
    assert claims["init_data"] == "00" * 48

    # with init-data: same measurement, and the init-data hash is bound
    init = pathlib.Path(env["ARCA_ROOT"]).parent / "init.toml"
    init.write_bytes(INIT_DATA)
    res_i = measure(image, "sim", INIT_DATA)
    run = arca_run(env, "--init-data", str(init), image)
    assert run.returncode == 0, run.stderr
    claims = evidence_claims(run.stdout, bytes.fromhex(res_i.init_data_hash))
    assert claims["measurement"] == res_i.measurement == res.measurement


def test_tampered_image_measures_differently(world) -> None:  # type: ignore[no-untyped-def]
    _, layout, env = world
    good = measure(f"oci:{layout}:evidence")
    bad = measure(f"oci:{layout}:tampered")
    assert bad.descriptor.process == good.descriptor.process
    assert bad.descriptor.rootfs_digest != good.descriptor.rootfs_digest
    run = arca_run(env, f"oci:{layout}:tampered")
    assert run.returncode == 0, run.stderr
    assert evidence_claims(run.stdout)["measurement"] == bad.measurement != good.measurement


def test_measure_cli_json(world, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from arca.cli.main import main

    _, layout, _ = world
    with pytest.raises(SystemExit) as e:
        main(["measure", f"oci:{layout}:evidence", "--tee", "sim", "--json"])
    assert e.value.code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["measurement"] == measure(f"oci:{layout}:evidence").measurement
    assert out["process"]["args"] == EVIDENCE_CMD
    with pytest.raises(SystemExit) as e:
        main(["measure", f"oci:{layout}:evidence", "--kbs", "http://127.0.0.1:8080", "--json"])
    assert e.value.code == 0
    out_kbs = json.loads(capsys.readouterr().out)
    from arca.host.containers.spec import generated_init_data

    assert out_kbs["measurement"] == out["measurement"]
    assert out_kbs["init_data_hash"] == hashlib.sha384(
        generated_init_data("http://127.0.0.1:8080")).hexdigest()
    with pytest.raises(SystemExit) as e:
        main(["measure", f"oci:{layout}:evidence", "--tee", "tdx"])
    assert e.value.code == 125
    assert "not supported" in capsys.readouterr().err


@pytest.mark.skipif(not containerd_available(), reason="needs containerd and ctr")
def test_measure_equals_evidence_under_containerd(world) -> None:  # type: ignore[no-untyped-def]
    tmp, layout, env = world
    with run_registry(tmp / "registry") as reg, run_containerd(tmp / "ctrd", env=env) as ctrd:
        ref = push(f"{layout}:evidence", reg.host, "measured:v1")
        ctrd.pull_plain_http(ref)
        res = ctrd.ctr("run", "--rm", *ctrd.run_args(str(BIN / "arca-runtime")),
                       "--annotation", "io.arca.tee=sim", ref, "measured-ctr", check=False,
                       timeout=120)
        assert res.returncode == 0, res.stderr
        claims = evidence_claims(res.stdout)
        pulled = pull(ImageStore(), ref, insecure=True)
        assert measure(pulled.name).measurement == claims["measurement"]
        # the same image loaded from its layout measures the same
        assert measure(f"oci:{layout}:evidence").measurement == claims["measurement"]


def test_measure_follows_the_measured_execution_policy(world) -> None:  # type: ignore[no-untyped-def]
    """Variables the init-data policy lets the host set are not measured: a container started
    with such a variable still shows the measurement `arca measure` predicted."""
    _, layout, env = world
    raw = (b'version = "0.1.0"\nalgorithm = "sha384"\n\n[data]\n'
           b'policy = "allow_env = [\\"LOG_*\\"]"\n')
    init = pathlib.Path(env["ARCA_ROOT"]).parent / "policy.toml"
    init.write_bytes(raw)
    image = f"oci:{layout}:evidence"
    expected = measure(image, "sim", raw)
    run = arca_run(env, "--init-data", str(init), "-e", "LOG_LEVEL=debug", image)
    assert run.returncode == 0, run.stderr
    claims = evidence_claims(run.stdout, bytes.fromhex(expected.init_data_hash))
    assert claims["measurement"] == expected.measurement
    # a variable the policy does not cover is measured: a measurement the tenant did not predict
    other = arca_run(env, "--init-data", str(init), "-e", "OTHER=1", image)
    assert other.returncode == 0, other.stderr
    assert evidence_claims(other.stdout)["measurement"] != expected.measurement
    assert measure(image, "sim", raw, env=["OTHER=1"]).measurement == \
        evidence_claims(other.stdout)["measurement"]
