"""The attested agent asks its TEE for one report, the KBS-bound one, and checks it before it
leaves: a real ``arca kbs serve`` behind a recording proxy, the in-test sim device, the agent
in a subprocess with a real tmpfs. Attacks: a swapped descriptor or swapped init-data make the
agent stop after ``auth`` (no evidence reaches the broker); ``evidence.json`` lets a consumer
tie the report to the nonce and key it carries."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pathlib
import subprocess
import sys

import pytest

from arca.host.simtee.platform import init_data_hash
from arca.wire.descriptor import LaunchDescriptor, ProcessSpec
from arca.wire.kbs_protocol import report_data
from arca.wire.simreport import SimEvidence
from tests.support.guest_simdevice import SimDeviceServer, authority
from tests.support.guest_td import run_in_guest_runtime
from tests.support.kbs_td import RecordingProxy

pytestmark = [pytest.mark.integration]

if os.geteuid() != 0:
    pytest.skip("needs root (tmpfs for the secrets)", allow_module_level=True)

from tests.support.kbs import admin_keypair, running_kbs  # noqa: E402

SECRET = b"one-report-secret"
SPEC = ProcessSpec(("/bin/true",), "/", 0, 0, ("PATH=/usr/bin:/bin",))
DESCRIPTOR = LaunchDescriptor("sim", "sha256:" + "3" * 64, "sha256:" + "4" * 64, SPEC)


@pytest.fixture(scope="module")
def kbs(tmp_path_factory: pytest.TempPathFactory):
    from cryptography.hazmat.primitives import serialization

    from arca.kbs.admin_client import AdminClient

    d = tmp_path_factory.mktemp("one-report")
    (d / "root.pem").write_bytes(authority()[1].public_bytes(serialization.Encoding.PEM))
    admin_key, pub = admin_keypair(d)
    with running_kbs(d / "kbs", "--trust-sim-root", str(d / "root.pem"),
                     "--admin-public-key", str(pub)) as kbs:
        admin = AdminClient(kbs.url, admin_key)
        admin.set_resource("default/key/k", SECRET)
        admin.set_reference_value("sim.measurement", [DESCRIPTOR.measurement().hex()])
        admin.close()
        proxy = RecordingProxy(("127.0.0.1", int(kbs.url.rsplit(":", 1)[1])))
        yield proxy
        proxy.close()


def init_data(url: str) -> bytes:
    return (f'version = "0.1.0"\n[data]\nkbs_url = "{url}"\n'
            "resources = '''\n[[resource]]\npath = \"default/key/k\"\nname = \"k\"\n'''\n"
            "agent = '{\"kbs_retries\": 0, \"insecure_kbs\": true}'\n").encode()


@contextlib.contextmanager
def make_td(tmp_path: pathlib.Path, kbs: RecordingProxy, init: bytes):
    """A TD's device directory (descriptor, host process, init-data, sim device) and its
    tmpfs run directory."""
    dev, run = tmp_path / "tee", tmp_path / "run"
    dev.mkdir()
    run.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(run)], check=True)
    device = None
    try:  # from the mount on: a failing set-up must not leave the tmpfs mounted
        (dev / "descriptor.json").write_text(json.dumps(DESCRIPTOR.to_json()))
        (dev / "process.json").write_text(json.dumps(
            {"args": list(SPEC.args), "env": list(SPEC.env), "cwd": "/"}))
        (dev / "init-data.toml").write_bytes(init)
        device = SimDeviceServer(str(dev / "sim.sock"), DESCRIPTOR.measurement(),
                                 init_data_hash(init))
        kbs.exchanges.clear()
        yield dev, run, device
    finally:
        if device is not None:
            device.close()
        subprocess.run(["umount", "-l", str(run)], check=False)


@pytest.fixture()
def td(tmp_path: pathlib.Path, kbs: RecordingProxy):
    with make_td(tmp_path, kbs, init_data(kbs.url)) as t:
        yield t


def run_agent(dev: pathlib.Path, run: pathlib.Path) -> subprocess.CompletedProcess[str]:
    code = ("import sys; from arca.guest.agent import main, Paths; "
            f"sys.exit(main(Paths({str(dev)!r}, {str(run)!r})))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)


def requests(proxy: RecordingProxy) -> list[str]:
    return [e.request_line.split(" HTTP")[0] for e in proxy.exchanges]


def test_one_report_serves_the_agent_the_broker_and_evidence_json(td, kbs) -> None:
    dev, run, device = td
    res = run_agent(dev, run)
    assert res.returncode == 0, res.stderr
    assert (run / "secrets" / "k").read_bytes() == SECRET
    assert len(device.requests) == 1  # was two: a local check, then the KBS-bound report
    doc = json.loads((run / "evidence.json").read_text())
    rd = bytes.fromhex(doc["report_data"])
    assert device.requests == [rd]
    # A consumer ties the report to the runtime-data it carries ...
    assert rd == report_data(doc["runtime_data"], "sim")
    assert set(doc["runtime_data"]) == {"nonce", "tee-pubkey"}
    report = SimEvidence.from_bytes(base64.b64decode(doc["evidence"])).report()
    assert report.report_data == rd and report.measurement == DESCRIPTOR.measurement()
    # ... and it is the very report the broker saw.
    attest = next(e for e in kbs.exchanges if e.request_line.startswith("POST /kbs/v0/attest"))
    body = json.loads(bytes(attest.request).partition(b"\r\n\r\n")[2])
    assert body["runtime-data"] == doc["runtime_data"]
    assert requests(kbs) == ["POST /kbs/v0/auth", "POST /kbs/v0/attest",
                             "GET /kbs/v0/resource/default/key/k"]


@pytest.mark.parametrize("lie", ["descriptor", "init-data"])
def test_a_report_that_fails_the_check_never_reaches_the_broker(td, kbs, lie: str) -> None:
    dev, run, device = td
    if lie == "descriptor":  # the host hands the agent another descriptor than it registered
        device.measurement = bytes(48)
    else:  # ... or init-data other than the one the TEE bound
        device.init_data_hash = bytes(48)
    res = run_agent(dev, run)
    assert res.returncode == 126
    assert "evidence check failed" in res.stderr and lie in res.stderr
    assert requests(kbs) == ["POST /kbs/v0/auth"]  # the nonce request only: no evidence sent
    assert not (run / "secrets").exists() and not (run / "evidence.json").exists()


def test_a_refused_process_contacts_neither_the_device_nor_the_broker(td, kbs) -> None:
    dev, run, device = td
    (dev / "process.json").write_text(json.dumps({"args": ["/bin/sh"], "cwd": "/"}))
    res = run_agent(dev, run)
    assert res.returncode == 126 and "execution policy" in res.stderr
    assert device.requests == [] and requests(kbs) == []


#: What an attested start must not import (each costs ms per TD start): the stdlib's HTTP
#: client (``email``: ~15 ms), ``dataclasses`` (``inspect``: ~5 ms; see arca.wire.record) and
#: OpenSSL's hashlib (the runtime ships the builtin SHA-2 only: ADR 0054).
HEAVY = ("http.client", "email", "urllib.request", "dataclasses", "inspect", "_hashlib")


def test_an_attested_start_in_the_guest_runtime_stays_lean(td, kbs, tmp_path) -> None:
    """The whole attested path (auth, key, report, attest, resource, JWE, tmpfs secret) in the
    shipped runtime: the secret arrives, and none of ``HEAVY`` was imported on the way."""
    dev, run, device = td
    code = ("import os, sys; from arca.guest.agent import main, Paths; "
            "os.execvpe = lambda f, a, env: (print(sorted(m for m in sys.modules if m in "
            f"{HEAVY!r})), "
            "sys.stdout.flush(), os._exit(0)); "
            f"main(Paths({str(dev)!r}, {str(run)!r}))")
    res = run_in_guest_runtime(tmp_path / "root", code)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "[]\n"
    assert (run / "secrets" / "k").read_bytes() == SECRET
    doc = json.loads((run / "evidence.json").read_text())
    assert doc["runtime_data"]["tee-pubkey"]["crv"] == "X25519"


def test_a_p256_key_for_trustee_brokers_gets_the_secret_too(tmp_path, kbs) -> None:
    """``agent.tee_key = "P-256"``: the key Trustee's KBS accepts (it knows no X25519); the
    broker encrypts to it and the agent decrypts, through cryptography's Python layer."""
    init = init_data(kbs.url).replace(b'"insecure_kbs": true}',
                                      b'"insecure_kbs": true, "tee_key": "P-256"}')
    assert b"P-256" in init
    with make_td(tmp_path, kbs, init) as (dev, run, _):
        res = run_agent(dev, run)
        assert res.returncode == 0, res.stderr
        assert (run / "secrets" / "k").read_bytes() == SECRET
        key = json.loads((run / "evidence.json").read_text())["runtime_data"]["tee-pubkey"]
        assert (key["kty"], key["crv"]) == ("EC", "P-256") and {"x", "y"} <= set(key)
        attest = next(e for e in kbs.exchanges if "/attest" in e.request_line)
        body = json.loads(bytes(attest.request).partition(b"\r\n\r\n")[2])
        assert body["runtime-data"]["tee-pubkey"] == key
