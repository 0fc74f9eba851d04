"""The guest's KbsClient and the ``arca kbs`` CLI end to end against a real KBS (HTTPS)."""

from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
import sys

import httpx
import pytest

from arca.cli.main import main
from arca.guest.kbs_client import KbsClient
from arca.kbs.tokens import make_admin_token
from arca.wire.errors import BrokerUnavailable, NotFound, PolicyDenied
from tests.support.kbs import SimAuthority, admin_keypair, make_tls, running_kbs, sample_evidence
from tests.support.registry import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_kbs(tmp_path_factory):
    d = tmp_path_factory.mktemp("kbs-tls")
    sim = SimAuthority()
    (d / "root.pem").write_bytes(sim.root_pem)
    key, pub = admin_keypair(d)
    ca, cert, tkey = make_tls(d)
    with running_kbs(d / "data", "--trust-sim-root", str(d / "root.pem"), "--admin-public-key",
                     str(pub), "--tls-cert", str(cert), "--tls-key", str(tkey),
                     "--insecure-allow-sample", scheme="https", verify=str(ca)) as kbs:
        h = {"Authorization": f"Bearer {make_admin_token(key)}"}
        ctx = ssl.create_default_context(cafile=str(ca))
        for path, data in (("default/key/app", b"s3cret"), ("default/key/other", b"x")):
            httpx.post(f"{kbs.url}/kbs/v0/resource/{path}", content=data, headers=h,
                       verify=ctx).raise_for_status()
        httpx.post(kbs.url + "/kbs/v0/reference-values", headers=h, verify=ctx,
                   json={"name": "sim.measurement", "values": ["ab" * 48]}).raise_for_status()
        yield kbs, sim, ca, d


def test_client_https_end_to_end(tls_kbs):
    kbs, sim, ca, _ = tls_kbs
    seen = []

    def evidence(rd):
        seen.append(rd)
        return sim.evidence(rd)

    client = KbsClient(kbs.url, tee="sim", evidence=evidence, ca_pem=ca.read_bytes())
    assert client.get_resource("default/key/app") == b"s3cret"
    assert client.get_resource("default/key/other") == b"x"
    assert len(seen) == 1 and len(seen[0]) == 64 and seen[0][48:] == bytes(16)


def test_client_with_init_data(tls_kbs):
    kbs, sim, ca, _ = tls_kbs
    toml = 'version = "0.1.0"\nalgorithm = "sha256"\n'
    bound = hashlib.sha256(toml.encode()).digest() + bytes(16)
    client = KbsClient(kbs.url, tee="sim", ca_pem=ca.read_bytes(), init_data_toml=toml,
                       evidence=lambda rd: sim.evidence(rd, init_data_hash=bound))
    assert client.get_resource("default/key/app") == b"s3cret"
    wrong = KbsClient(kbs.url, tee="sim", ca_pem=ca.read_bytes(), init_data_toml=toml,
                      evidence=sim.evidence)
    with pytest.raises(PolicyDenied, match="AttestationError"):
        wrong.attest()


def test_client_errors(tls_kbs):
    kbs, sim, ca, _ = tls_kbs
    client = KbsClient(kbs.url, tee="sim", evidence=sim.evidence, ca_pem=ca.read_bytes())
    with pytest.raises(NotFound, match="ResourceNotFound"):
        client.get_resource("default/key/none")
    sample = KbsClient(kbs.url, tee="sample", evidence=sample_evidence, ca_pem=ca.read_bytes())
    with pytest.raises(PolicyDenied, match="PolicyDeny") as e:
        sample.get_resource("default/key/app")
    assert e.value.fields["status"] == 403
    no_ca = KbsClient(kbs.url, tee="sim", evidence=sim.evidence)  # the test CA is not trusted
    with pytest.raises(BrokerUnavailable, match=kbs.url):
        no_ca.attest()
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(BrokerUnavailable, match=dead):
        KbsClient(dead, tee="sim", evidence=sim.evidence, timeout=2).attest()
    with pytest.raises(ValueError):
        client.get_resource("../etc/passwd")


def test_plain_http_needs_explicit_flag(tmp_path):
    r = subprocess.run([sys.executable, "-c", "from arca.cli.main import main; main()", "kbs",
                        "serve", "--data-dir", str(tmp_path), "--listen",
                        f"127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 125
    assert "--tls-cert" in r.stderr and "Traceback" not in r.stderr


def run_cli(capsys, *argv):
    code = 0
    try:
        main(list(argv))
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_admin_and_get_resource(tls_kbs, tmp_path, capsys):
    kbs, _, ca, d = tls_kbs
    base = ["kbs", "admin", "--url", kbs.url, "--admin-key", str(d / "admin.key"),
            "--cacert", str(ca)]
    (tmp_path / "secret").write_bytes(b"from-cli")
    assert run_cli(capsys, *base, "set-resource", "cli/key/one", "--file",
                   str(tmp_path / "secret"))[0] == 0
    code, out, _ = run_cli(capsys, *base, "get-resource", "cli/key/one")
    assert code == 0 and out == "from-cli"
    assert run_cli(capsys, *base, "set-reference-value", "sample.svn", "1")[0] == 0
    code, out, _ = run_cli(capsys, *base, "get-reference-values")
    assert json.loads(out)["sample.svn"] == ["1"]
    # sample now affirms (svn 1 is a reference value): the guest-side client command works
    code, out, err = run_cli(capsys, "kbs", "get-resource", "--url", kbs.url, "--cacert",
                             str(ca), "--tee", "sample", "cli/key/one")
    assert (code, out) == (0, "from-cli"), err
    policy = tmp_path / "deny.rego"
    policy.write_text("package policy\nimport rego.v1\ndefault allow := false\n")
    assert run_cli(capsys, *base, "set-resource-policy", "--file", str(policy))[0] == 0
    code, _, err = run_cli(capsys, "kbs", "get-resource", "--url", kbs.url, "--cacert",
                           str(ca), "--tee", "sample", "cli/key/one")
    assert code == 125 and "PolicyDeny" in err and "Traceback" not in err
    default = tmp_path / "default.rego"
    default.write_text('package policy\nimport rego.v1\ndefault allow := false\n'
                       'allow if input.submods.cpu0["ear.status"] == "affirming"\n')
    assert run_cli(capsys, *base, "set-resource-policy", "--file", str(default))[0] == 0
    assert run_cli(capsys, *base, "delete-resource", "cli/key/one")[0] == 0
    code, _, err = run_cli(capsys, *base, "get-resource", "cli/key/one")
    assert code == 125 and "ResourceNotFound" in err
    bad = tmp_path / "bad.rego"
    bad.write_text("package policy\nallow := 1 +\n")
    code, _, err = run_cli(capsys, *base, "set-attestation-policy", "--file", str(bad))
    assert code == 125 and "not valid Rego" in err


def test_cli_keygen(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "kbs", "keygen", "--out", str(tmp_path / "adm"))
    assert code == 0 and (tmp_path / "adm.key").stat().st_mode & 0o777 == 0o600
    assert b"PUBLIC KEY" in (tmp_path / "adm.pub").read_bytes()
    code, _, err = run_cli(capsys, "kbs", "keygen", "--out", str(tmp_path / "adm"))
    assert code == 125 and "refusing to overwrite" in err


def test_cli_admin_wrong_key(tls_kbs, tmp_path, capsys):
    kbs, _, ca, _ = tls_kbs
    admin_keypair(tmp_path)  # another admin key: refused
    code, _, err = run_cli(capsys, "kbs", "admin", "--url", kbs.url, "--admin-key",
                           str(tmp_path / "admin.key"), "--cacert", str(ca),
                           "get-reference-values")
    assert code == 125 and "401" in err and "AdminAuth" in err


def test_serve_from_config_file(tmp_path):
    cfg = tmp_path / "kbs.toml"
    cfg.write_text("insecure_allow_sample = true\nsession_timeout = 7\n")
    with running_kbs(tmp_path / "data", "--config", str(cfg)) as kbs:
        r = httpx.post(kbs.url + "/kbs/v0/auth", json={"version": "0.4.0", "tee": "sample"})
        assert r.status_code == 200 and "Max-Age=7" in r.headers["set-cookie"]
    cfg.write_text("unknown_setting = 1\n")
    r = subprocess.run([sys.executable, "-c", "from arca.cli.main import main; main()", "kbs",
                        "serve", "--config", str(cfg), "--data-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 125 and "unknown_setting" in r.stderr
