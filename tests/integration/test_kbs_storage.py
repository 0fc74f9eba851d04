"""KBS storage on SQLite and PostgreSQL: admin writes survive SIGKILL, restarts keep resources,
policies, reference values and the token key, secrets are encrypted at rest, and two KBS
processes share one PostgreSQL database (sessions included)."""

from __future__ import annotations

import base64
import threading
import time

import httpx
import pytest
import sqlalchemy as sa

from arca.kbs.tokens import make_admin_token
from tests.integration.test_kbs_protocol import attest_body, auth, ec_key
from tests.support.kbs import SimAuthority, admin_keypair, running_kbs, start_kbs
from tests.support.postgres import pg_bin, postgres_cluster, reset_kbs_schema

pytestmark = pytest.mark.integration
POLICY = ('package policy\nimport rego.v1\ndefault allow := false\n'
          'allow if input.submods.cpu0["ear.status"] == "affirming"\n'
          '# custom marker\n')


@pytest.fixture(scope="module")
def pg_url():
    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed")
    with postgres_cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    """(extra serve args, db url or None) with a fresh schema per test."""
    sim = SimAuthority()
    (tmp_path / "root.pem").write_bytes(sim.root_pem)
    key, pub = admin_keypair(tmp_path)
    args = ["--trust-sim-root", str(tmp_path / "root.pem"), "--admin-public-key", str(pub),
            "--kek-file", str(tmp_path / "kek.bin")]
    db = None
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        reset_kbs_schema(url)
        db = url
        args += ["--db", url]
    return {"args": args, "db": db, "sim": sim, "key": key, "tmp": tmp_path}


def admin(url, key, method, path, **kw):
    return httpx.request(method, url + path, timeout=30,
                         headers={"Authorization": f"Bearer {make_admin_token(key)}"}, **kw)


def attest(url, sim, client=None):
    client = client or httpx.Client(base_url=url)
    nonce = auth(client).json()["nonce"]
    priv, pub = ec_key()
    r = client.post("/kbs/v0/attest", json=attest_body(nonce, pub, sim.evidence))
    assert r.status_code == 200, r.text
    return client, r.json()["token"]


def test_restart_keeps_everything(backend):
    b, key, sim = backend, backend["key"], backend["sim"]
    with running_kbs(b["tmp"] / "data", *b["args"]) as kbs:
        admin(kbs.url, key, "POST", "/kbs/v0/resource/a/b/c", content=b"persist").raise_for_status()
        admin(kbs.url, key, "POST", "/kbs/v0/resource-policy",
              json={"policy": base64.b64encode(POLICY.encode()).decode()}).raise_for_status()
        admin(kbs.url, key, "POST", "/kbs/v0/reference-values",
              json={"name": "sim.measurement", "values": ["ab" * 48]}).raise_for_status()
        jwks = httpx.get(kbs.url + "/.well-known/kbs-token-jwks.json").json()
        _, token = attest(kbs.url, sim)
    with running_kbs(b["tmp"] / "data", *b["args"]) as kbs:
        assert admin(kbs.url, key, "GET", "/kbs/v0/resource/a/b/c").content == b"persist"
        got = admin(kbs.url, key, "GET", "/kbs/v0/resource-policy").json()
        assert base64.b64decode(got["policy"]).decode() == POLICY
        assert admin(kbs.url, key, "GET", "/kbs/v0/reference-values").json() == {
            "sim.measurement": ["ab" * 48]}
        assert httpx.get(kbs.url + "/.well-known/kbs-token-jwks.json").json() == jwks
        r = httpx.get(kbs.url + "/kbs/v0/resource/a/b/c",
                      headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text  # a token issued before the restart still works


def test_sigkill_loses_no_acknowledged_write(backend):
    b, key = backend, backend["key"]
    kbs = start_kbs(b["tmp"] / "data", *b["args"])
    acked: list[int] = []
    stop = threading.Event()

    def writer():
        client = httpx.Client(timeout=10)
        i = 0
        while not stop.is_set():
            try:
                r = client.post(f"{kbs.url}/kbs/v0/resource/w/k/{i}", content=f"v{i}".encode(),
                                headers={"Authorization": f"Bearer {make_admin_token(key)}"})
            except httpx.HTTPError:
                return
            if r.status_code == 200:
                acked.append(i)
            i += 1

    threads = [threading.Thread(target=writer)]
    threads[0].start()
    deadline = time.monotonic() + 20
    while len(acked) < 40 and time.monotonic() < deadline:
        time.sleep(0.02)
    kbs.kill()  # SIGKILL in the middle of the stream
    stop.set()
    threads[0].join(10)
    assert len(acked) >= 40
    with running_kbs(b["tmp"] / "data", *b["args"]) as kbs:
        for i in acked:
            r = admin(kbs.url, key, "GET", f"/kbs/v0/resource/w/k/{i}")
            assert r.status_code == 200 and r.content == f"v{i}".encode(), (i, r.text)


def test_resources_encrypted_at_rest(backend):
    b, key = backend, backend["key"]
    marker = b"PLAINTEXT-MARKER-0123456789"
    with running_kbs(b["tmp"] / "data", *b["args"]) as kbs:
        admin(kbs.url, key, "POST", "/kbs/v0/resource/enc/k/x", content=marker).raise_for_status()
    if b["db"] is None:
        for f in (b["tmp"] / "data").iterdir():
            assert marker not in f.read_bytes(), f
        url = f"sqlite:///{b['tmp'] / 'data' / 'kbs.db'}"
    else:
        url = b["db"].replace("postgresql://", "postgresql+psycopg://")
    engine = sa.create_engine(url)
    with engine.connect() as c:
        blob = c.execute(sa.text("SELECT blob FROM kbs_resources WHERE path='enc/k/x'")).scalar()
    engine.dispose()
    assert blob and marker not in bytes(blob)
    (b["tmp"] / "kek.bin").write_bytes(b"\1" * 32)  # the wrong KEK: refuse to start
    with pytest.raises(RuntimeError, match="does not decrypt"):
        start_kbs(b["tmp"] / "data", *b["args"], ready_timeout=20)


def test_two_kbs_share_postgres(pg_url, tmp_path):
    sim = SimAuthority()
    (tmp_path / "root.pem").write_bytes(sim.root_pem)
    key, pub = admin_keypair(tmp_path)
    reset_kbs_schema(pg_url)
    args = ["--trust-sim-root", str(tmp_path / "root.pem"), "--admin-public-key", str(pub),
            "--kek-file", str(tmp_path / "kek.bin"), "--db", pg_url]
    with running_kbs(tmp_path / "a", *args) as a, running_kbs(tmp_path / "b", *args) as b:
        admin(a.url, key, "POST", "/kbs/v0/resource/s/h/x", content=b"shared").raise_for_status()
        admin(b.url, key, "POST", "/kbs/v0/reference-values",
              json={"name": "sim.measurement", "values": ["ab" * 48]}).raise_for_status()
        assert admin(b.url, key, "GET", "/kbs/v0/resource/s/h/x").content == b"shared"
        # auth at A, attest at B, fetch at A with the cookie and at B with the token
        ca = httpx.Client(base_url=a.url)
        nonce = auth(ca).json()["nonce"]
        _, pub_jwk = ec_key()
        cb = httpx.Client(base_url=b.url, cookies=ca.cookies)
        r = cb.post("/kbs/v0/attest", json=attest_body(nonce, pub_jwk, sim.evidence))
        assert r.status_code == 200, r.text
        assert ca.get("/kbs/v0/resource/s/h/x").status_code == 200
        assert httpx.get(b.url + "/kbs/v0/resource/s/h/x", headers={
            "Authorization": f"Bearer {r.json()['token']}"}).status_code == 200
        # the nonce is single-use across both processes
        assert ca.post("/kbs/v0/attest", json=attest_body(nonce, pub_jwk, sim.evidence)
                       ).status_code == 401
        assert (httpx.get(a.url + "/.well-known/kbs-token-jwks.json").json()
                == httpx.get(b.url + "/.well-known/kbs-token-jwks.json").json())


def test_two_workers_share_sessions(tmp_path):
    """With several workers every request may land on another process: sessions still work."""
    from arca.guest.kbs_client import KbsClient

    sim = SimAuthority()
    (tmp_path / "root.pem").write_bytes(sim.root_pem)
    key, pub = admin_keypair(tmp_path)
    with running_kbs(tmp_path / "data", "--trust-sim-root", str(tmp_path / "root.pem"),
                     "--admin-public-key", str(pub), "--workers", "2") as kbs:
        admin(kbs.url, key, "POST", "/kbs/v0/resource/w/k/x", content=b"ok").raise_for_status()
        admin(kbs.url, key, "POST", "/kbs/v0/reference-values",
              json={"name": "sim.measurement", "values": ["ab" * 48]}).raise_for_status()
        time.sleep(1.1)  # the other worker's policy cache
        for _ in range(10):  # each call is a new connection (urllib)
            assert KbsClient(kbs.url, tee="sim", evidence=sim.evidence).get_resource(
                "w/k/x") == b"ok"
        for _ in range(5):
            client, _ = attest(kbs.url, sim, httpx.Client(base_url=kbs.url,
                                                          headers={"Connection": "close"}))
            assert client.get("/kbs/v0/resource/w/k/x").status_code == 200
        pids = {line.split('pid="')[1].split('"')[0]
                for _ in range(20)
                for line in httpx.get(kbs.url + "/metrics",
                                      headers={"Connection": "close"}).text.splitlines()
                if line.startswith("arca_kbs_attestations_total{")}
        assert pids  # metrics come per worker


def test_replicas_create_the_schema_one_at_a_time(pg_url, tmp_path):
    """KBS replicas of a Deployment start together on an empty database. SQLAlchemy's
    create_all checks, then creates; two replicas interleaving that failed the second CREATE
    TABLE with DuplicateTable and the replica exited (seen in CI). Schema creation now holds a
    PostgreSQL advisory lock: a replica waits while another holds it, then comes up."""
    from arca.kbs.store import SCHEMA_LOCK_KEY, Store

    reset_kbs_schema(pg_url)
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    done = threading.Event()
    errors: list[BaseException] = []

    def replica() -> None:
        try:
            Store(pg_url, str(tmp_path), bytes(32)).close()
        except BaseException as e:  # noqa: BLE001 - asserted below
            errors.append(e)
        done.set()

    with engine.begin() as other:  # another replica, in the middle of creating the schema
        other.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK_KEY})
        t = threading.Thread(target=replica)
        t.start()
        assert not done.wait(1.0), "a replica created the schema while another one was at it"
    t.join(30)
    engine.dispose()
    assert done.is_set() and not errors, errors
