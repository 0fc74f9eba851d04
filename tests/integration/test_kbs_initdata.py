"""Init-data given to the attestation policy (issue 13, item 9), through a real KBS.

The attack: a tenant writes an attestation policy the way docs/kbs.md describes its input
(``input.init_data`` is the parsed init-data document) and refuses TDs whose execution policy
lets the host ``exec`` into them — a negated check. The KBS handed policies the raw TOML text
instead, so ``input.init_data.data.policy`` was undefined, the negation held, and a TD whose
init-data allows exec got the secret. Now the body is checked against the init-data hash bound
in the verified evidence and only then given to policies, parsed; without a body they get
``null``; a body the evidence does not bind never reaches a policy.
"""

from __future__ import annotations

import base64
import hashlib
import json

import httpx
import pytest
from jwcrypto import jwe

from arca.kbs.tokens import make_admin_token
from tests.integration.test_kbs_protocol import PROBLEM, attest_body, auth, ec_key
from tests.support.kbs import MEASUREMENT, sim_kbs

pytestmark = pytest.mark.integration
SECRET = b"no exec for you"

TENANT_POLICY = """package policy

import rego.v1

default hardware := 97

default executables := 33

# Never affirm a TD whose init-data lets the host exec into it (docs: input.init_data is the
# parsed init-data document; [data].policy is CoCo's embedded TOML string).
exec_allowed if contains(input.init_data.data.policy, "allow_exec = true")

hardware := 2 if {
	input.tee == "sim"
	input.claims.debug == false
	not exec_allowed
}

executables := 2 if input.claims.measurement in data.reference["sim.measurement"]

# Record what the policy was given (visible in the token as a trust claim).
sourced_data := 2 if is_object(input.init_data)

sourced_data := 3 if input.init_data == null
"""

EXEC_INIT_DATA = ('version = "0.1.0"\nalgorithm = "sha384"\n[data]\n'
                  'kbs_url = "https://kbs.example"\n'
                  "policy = '''\nallow_exec = true\n'''\n")
PLAIN_INIT_DATA = 'version = "0.1.0"\nalgorithm = "sha384"\n[data]\nkbs_url = "https://kbs.example"\n'


@pytest.fixture(scope="module")
def kbs(tmp_path_factory: pytest.TempPathFactory):
    with sim_kbs(tmp_path_factory.mktemp("kbs-initdata")) as (server, sim, key):
        headers = {"Authorization": f"Bearer {make_admin_token(key, lifetime=60)}"}
        for path, body in (
                ("/kbs/v0/attestation-policy",
                 {"policy": base64.b64encode(TENANT_POLICY.encode()).decode()}),
                ("/kbs/v0/reference-values",
                 {"name": "sim.measurement", "values": [MEASUREMENT.hex()]})):
            r = httpx.post(server.url + path, json=body, headers=headers)
            assert r.status_code == 200, r.text
        r = httpx.post(server.url + "/kbs/v0/resource/default/key/app", content=SECRET,
                       headers=headers)
        assert r.status_code == 200, r.text
        yield server, sim


def _session(kbs, bound: bytes, sent: str | None):
    server, sim = kbs
    client = httpx.Client(base_url=server.url)
    nonce = auth(client).json()["nonce"]
    priv, pub = ec_key()
    r = client.post("/kbs/v0/attest", json=attest_body(
        nonce, pub, lambda rd: sim.evidence(rd, init_data_hash=bound), sent))
    return client, r, priv


def _vector(r: httpx.Response) -> dict[str, int]:
    claims = json.loads(base64.urlsafe_b64decode(r.json()["token"].split(".")[1] + "=="))
    return claims["submods"]["cpu0"]["ear.trustworthiness-vector"]


def test_a_negated_init_data_check_sees_the_parsed_document(kbs) -> None:
    bound = hashlib.sha384(EXEC_INIT_DATA.encode()).digest()
    client, r, _ = _session(kbs, bound, EXEC_INIT_DATA)
    assert r.status_code == 200, r.text
    assert _vector(r)["hardware"] == 97 and _vector(r)["sourced-data"] == 2
    got = client.get("/kbs/v0/resource/default/key/app")
    assert got.status_code == 403 and got.json()["type"] == PROBLEM + "PolicyDeny", got.text


def test_init_data_without_exec_gets_the_secret(kbs) -> None:
    bound = hashlib.sha384(PLAIN_INIT_DATA.encode()).digest()
    client, r, priv = _session(kbs, bound, PLAIN_INIT_DATA)
    assert r.status_code == 200, r.text
    assert _vector(r)["hardware"] == 2 and _vector(r)["sourced-data"] == 2
    got = client.get("/kbs/v0/resource/default/key/app")
    assert got.status_code == 200, got.text
    obj = jwe.JWE()
    obj.deserialize(json.dumps(got.json()), key=priv)
    assert obj.payload == SECRET


def test_a_body_the_evidence_does_not_bind_never_reaches_a_policy(kbs) -> None:
    """The TD was launched with the exec-allowing init-data; the attester sends the harmless
    one (or sends none and claims nothing)."""
    bound = hashlib.sha384(EXEC_INIT_DATA.encode()).digest()
    _, r, _ = _session(kbs, bound, PLAIN_INIT_DATA)
    assert r.status_code == 401 and r.json()["type"] == PROBLEM + "AttestationError", r.text
    client, r, _ = _session(kbs, bound, None)
    assert r.status_code == 200, r.text  # no body: the policy is given nothing (null)
    assert _vector(r)["sourced-data"] == 3
