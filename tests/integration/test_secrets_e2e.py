"""Issue 5 acceptance: attested secret delivery end to end, with real containerd (``ctr run``
through ``arca-runtime``), a real docker-registry, a real ``arca kbs serve`` process trusting
the sim root of this test's ``ARCA_ROOT``, and the ``sim`` TEE.

The tenant's side is done as a tenant would: ``arca policy generate`` on the OCI layout of
each image (+ the init-data its containers are started with), installed with
``arca kbs admin`` / the admin client. The TD reaches the KBS through a recording TCP proxy, so
the tests can also check the wire (no plaintext secret) and replay what a TD sent.

After every test, the runtime state, bundles, containerd root/state, runc state and the KBS
data directory are scanned for the plaintext secrets.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import httpx
import pytest

from tests.support.containerd import containerd_available, run_containerd
from tests.support.images import build_busybox_image, push
from tests.support.kbs_td import files_containing, recording_proxy
from tests.support.registry import registry_available, run_registry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (containerd_available() and registry_available()
                            and os.geteuid() == 0),
                       reason="needs root, containerd, ctr and docker-registry"),
]

BIN = pathlib.Path(sys.executable).parent
RUNTIME = str(BIN / "arca-runtime")
ARCA = str(BIN / "arca")
#: Unique per run, so the plaintext scan cannot match anything but this run's secrets.
SECRET_APP = f"app-secret-{uuid.uuid4().hex}".encode()
SECRET_OTHER = f"other-secret-{uuid.uuid4().hex}".encode()
APP_CMD = ["sh", "-c", "cat /run/arca/secrets/app.key; echo; "
           "stat -c 'mode=%a uid=%u' /run/arca/secrets/app.key"]
STEAL = ["sh", "-c", "cat /run/arca/secrets/*"]
RUN = uuid.uuid4().hex[:6]


#: The test broker is plain HTTP on loopback: said explicitly in the measured init-data.
INSECURE = "insecure_kbs = true\n"


def init_data(kbs_url: str, *, resource: str = "default/key/app", name: str = "app.key",
              policy: str = "", agent: str = "kbs_timeout = 2.0\nkbs_retries = 1\n"
              "kbs_backoff = 0.2", env: str | None = None) -> bytes:
    env_line = f'env = "{env}"\n' if env else ""
    doc = (f'version = "0.1.0"\nalgorithm = "sha384"\n\n[data]\nkbs_url = "{kbs_url}"\n'
           f"resources = '''\n[[resource]]\npath = \"{resource}\"\nname = \"{name}\"\n"
           f"{env_line}'''\nagent = '''\n{agent}\n{INSECURE if kbs_url.startswith('http:') else ''}"
           "'''\n")
    if policy:
        doc += f"policy = '''\n{policy}\n'''\n"
    return doc.encode()


PRINT_ENV = ["sh", "-c", 'printf %s "$APP_KEY"']
ALLOW_POLICY = ('allow_args = [["sh", "-c", "cat /run/arca/secrets/*"], ["sleep", "*"], '
                + json.dumps(PRINT_ENV) + ']\nallow_env = ["FOO"]\nallow_exec = true')


class World:
    def __init__(self, tmp: pathlib.Path, ctrd, images: dict[str, str], layout: pathlib.Path,
                 env: dict[str, str], kbs, proxy, admin, kbs_dir: pathlib.Path) -> None:
        self.tmp, self.ctrd, self.images, self.layout, self.env = tmp, ctrd, images, layout, env
        self.kbs, self.proxy, self.admin, self.kbs_dir = kbs, proxy, admin, kbs_dir
        self.kbs_args: tuple[str, ...] = ()
        self.init: dict[str, bytes] = {}

    def ctr_run(self, image: str, init: bytes | None, *cmd: str, extra: tuple[str, ...] = (),
                detach: bool = False, cid: str | None = None
                ) -> tuple[str, subprocess.CompletedProcess[str]]:
        cid = cid or f"s{RUN}-{uuid.uuid4().hex[:8]}"
        ann = ["--annotation", "io.arca.tee=sim"]
        if init is not None:
            ann += ["--annotation", f"io.arca.init-data={base64.b64encode(init).decode()}"]
        # --net-host: the KBS listens on the host's loopback.
        mode = ["--net-host", "-d" if detach else "--rm"]
        res = self.ctrd.ctr("run", *mode, *self.ctrd.run_args(RUNTIME), *ann, *extra,
                            self.images[image], cid, *cmd, check=False, timeout=90)
        return cid, res

    def remove(self, cid: str) -> None:
        self.ctrd.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False)
        for _ in range(100):
            if self.ctrd.ctr("tasks", "delete", cid, check=False).returncode == 0:
                break
            if "not found" in self.ctrd.ctr("tasks", "ls", check=False).stdout:
                break
            time.sleep(0.1)
        self.ctrd.ctr("containers", "delete", cid, check=False)

    def arca(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([ARCA, *args], env=self.env, capture_output=True, text=True,
                             timeout=300)
        if check and res.returncode != 0:
            raise AssertionError(f"arca {' '.join(args)}: {res.returncode} {res.stderr}")
        return res


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    from arca.host.simtee import client, locations
    from arca.kbs.admin_client import AdminClient
    from tests.support.kbs import admin_keypair, start_kbs

    tmp = tmp_path_factory.mktemp("secrets")
    # short: `arca run` ids are 64 hex digits and TD sockets live under ARCA_RUN (sun_path)
    short_run = tempfile.mkdtemp(prefix="ars-", dir="/tmp")
    env_vars = {"ARCA_ROOT": str(tmp / "arca-root"), "ARCA_RUN": short_run}
    mp = pytest.MonkeyPatch()
    for k, v in env_vars.items():
        mp.setenv(k, v)
    env = {**os.environ, **env_vars}
    layout = tmp / "layout"
    build_busybox_image(layout, "app", files={"/etc/app.conf": b"mode=prod\n"}, cmd=APP_CMD,
                        user="app", env=["GREETING=hello"])
    # one byte of one file changed: a new image with a new digest
    build_busybox_image(layout, "app-tampered", files={"/etc/app.conf": b"mode=prof\n"},
                        cmd=APP_CMD, user="app", env=["GREETING=hello"])
    build_busybox_image(layout, "other", files={"/etc/other.conf": b"x\n"},
                        cmd=["sh", "-c", "cat /run/arca/secrets/*; echo"], user="app")
    client.ensure_running()  # creates the sim root the KBS is told to trust
    sim_root = locations.root_cert_path()
    kbs_dir = tmp / "kbs"
    kbs_dir.mkdir()
    admin_key, admin_pub = admin_keypair(kbs_dir)
    kbs_args = ("--trust-sim-root", str(sim_root), "--admin-public-key", str(admin_pub))
    kbs = start_kbs(kbs_dir, *kbs_args)
    w: World | None = None
    try:
        with run_registry(tmp / "registry") as reg, \
                run_containerd(tmp / "ctrd", env=env_vars) as ctrd, \
                recording_proxy(("127.0.0.1", int(kbs.url.rsplit(":", 1)[1]))) as proxy:
            images = {}
            for tag in ("app", "app-tampered", "other"):
                images[tag] = push(f"{layout}:{tag}", reg.host, f"secrets:{tag}")
                ctrd.pull_plain_http(images[tag])
            admin = AdminClient(kbs.url, admin_key)
            w = World(tmp, ctrd, images, layout, env, kbs, proxy, admin, kbs_dir)
            w.kbs_args = kbs_args
            _tenant_setup(w, admin_key_path=kbs_dir / "admin.key")
            yield w
            admin.close()
    finally:
        kbs.kill()
        if w is not None and w.kbs is not kbs:  # restarted by a test
            w.kbs.kill()
        if w is not None:  # `arca run` containers a failed test left behind
            ps = w.arca("ps", "-a", "--json", check=False)
            for c in json.loads(ps.stdout or "[]") if ps.returncode == 0 else []:
                w.arca("rm", "-f", c["id"], check=False)
        client.stop()
        mp.undo()
        shutil.rmtree(short_run, ignore_errors=True)


def _tenant_setup(w: World, admin_key_path: pathlib.Path) -> None:
    """What a tenant does before anything runs: store secrets, generate and install policy."""
    url = w.proxy.url
    w.init = {
        "strict": init_data(url),
        "allow": init_data(url, policy=ALLOW_POLICY, env="APP_KEY"),
        "other": init_data(url, resource="default/key/other", name="other.key"),
        "changed": init_data(url, agent="kbs_timeout = 3.0\nkbs_retries = 1\nkbs_backoff = 0.2"),
    }
    for name, raw in w.init.items():
        (w.tmp / f"{name}.toml").write_bytes(raw)
    w.admin.set_resource("default/key/app", SECRET_APP)
    w.admin.set_resource("default/key/other", SECRET_OTHER)
    grants: dict[str, list[str]] = {}
    merge: list[str] = []
    # "app" under two init-data variants: the second run merges the first one's grants
    for image, init in (("app", "strict"), ("app", "allow"), ("other", "other")):
        out = w.tmp / f"policy-{image}-{init}"
        res = w.arca("policy", "generate", f"oci:{w.layout}:{image}", "--tee", "sim",
                     "--init-data", str(w.tmp / f"{init}.toml"), "--out-dir", str(out),
                     "--json", *(merge if image == "app" else []))
        gen = json.loads(res.stdout)
        grants.update(gen["reference_values"])
        merge = ["--merge", gen["reference_values_file"]]
    assert set(grants) == {"release:default:key:app", "release:default:key:other"}
    # strict: the image's measurement; allow: one per allow_args entry (the image's own
    # command matches the first entry, so it measures as that entry)
    assert len(grants["release:default:key:app"]) == 1 + 3
    # the policy through the CLI, as a tenant would; the grants through the admin client
    w.arca("kbs", "admin", "--url", w.kbs.url, "--admin-key", str(admin_key_path),
           "set-resource-policy", "--file", str(out / "resource-policy.rego"))
    for name, values in grants.items():
        w.admin.set_reference_value(name, values)


def scan_roots(world: World) -> list[pathlib.Path]:
    """containerd root + state (bundles) + runc state, Arca's runtime state and TD dirs, the
    guest runtime / image store / sim platform, and the KBS data directory."""
    return [world.ctrd.root, pathlib.Path(world.env["ARCA_ROOT"]),
            pathlib.Path(world.env["ARCA_RUN"]), world.kbs_dir]


@pytest.fixture(autouse=True)
def no_plaintext_on_host(world: World):
    """After each test: no plaintext secret in any host state directory, nor on the wire."""
    yield
    roots = scan_roots(world)
    needles = [SECRET_APP, SECRET_OTHER, base64.b64encode(SECRET_APP),
               base64.b64encode(SECRET_OTHER)]
    assert files_containing(needles, roots) == []
    wire = world.proxy.captured()
    assert not any(n in wire for n in needles)


def output(res: subprocess.CompletedProcess[str]) -> str:
    return res.stdout.replace("\r", "")


def assert_refused(res: subprocess.CompletedProcess[str], reason: str) -> None:
    assert res.returncode == 126, (res.returncode, res.stdout, res.stderr)
    assert "arca-agent: error:" in res.stderr and reason in res.stderr, res.stderr
    assert SECRET_APP.decode() not in res.stdout
    assert "Traceback" not in res.stderr


DENIED_APP = "resource policy denies default/key/app"


# -- delivery ---------------------------------------------------------------------------------


def test_accepted_measurement_receives_its_secret_as_a_0400_file_of_the_workload_user(
        world: World) -> None:
    _, res = world.ctr_run("app", world.init["strict"])
    assert res.returncode == 0, res.stderr
    assert output(res) == f"{SECRET_APP.decode()}\nmode=400 uid=1000\n"


def test_gzip_annotation_and_environment_secret(world: World) -> None:
    """The annotation may be gzip-compressed (same TOML, same hash); a resource with ``env``
    reaches the workload's environment as well."""
    import gzip

    cid = f"s{RUN}-{uuid.uuid4().hex[:8]}"
    packed = base64.b64encode(gzip.compress(world.init["strict"])).decode()
    res = world.ctrd.ctr("run", "--rm", "--net-host", *world.ctrd.run_args(RUNTIME),
                         "--annotation", "io.arca.tee=sim", "--annotation",
                         f"io.arca.init-data={packed}", world.images["app"], cid,
                         check=False, timeout=90)
    assert res.returncode == 0 and output(res).startswith(SECRET_APP.decode()), res.stderr
    _, res = world.ctr_run("app", world.init["allow"], *PRINT_ENV)
    assert res.returncode == 0 and output(res) == SECRET_APP.decode(), res.stderr


def test_other_image_gets_its_own_secret_but_not_the_first_ones(world: World) -> None:
    _, res = world.ctr_run("other", world.init["other"])
    assert res.returncode == 0 and output(res) == SECRET_OTHER.decode() + "\n", res.stderr
    _, res = world.ctr_run("other", world.init["strict"])
    assert_refused(res, DENIED_APP)


@pytest.mark.parametrize("case", ["one-byte-changed-image", "changed-init-data"])
def test_changed_image_or_init_data_is_refused_with_the_reason(world: World, case: str) -> None:
    if case == "one-byte-changed-image":
        _, res = world.ctr_run("app-tampered", world.init["strict"])
    else:
        _, res = world.ctr_run("app", world.init["changed"])
    assert_refused(res, DENIED_APP)


# -- the host deviates from the measured process ----------------------------------------------


def test_host_modified_command_is_refused_unless_the_policy_allows_it(world: World) -> None:
    _, res = world.ctr_run("app", world.init["strict"], *STEAL)
    assert_refused(res, DENIED_APP)
    _, res = world.ctr_run("app", world.init["allow"], *STEAL)
    assert res.returncode == 0, res.stderr
    assert output(res) == SECRET_APP.decode()


def test_added_environment_variable_is_refused_unless_the_policy_allows_it(
        world: World) -> None:
    _, res = world.ctr_run("app", world.init["strict"], extra=("--env", "FOO=1"))
    assert_refused(res, DENIED_APP)
    _, res = world.ctr_run("app", world.init["allow"], "sh", "-c", 'cat /run/arca/secrets/*',
                           extra=("--env", "FOO=1"))
    assert res.returncode == 0 and output(res) == SECRET_APP.decode()
    # allow_env names FOO only
    _, res = world.ctr_run("app", world.init["allow"], extra=("--env", "BAR=1"))
    assert_refused(res, DENIED_APP)


def test_exec_into_the_td_is_refused_unless_the_policy_allows_it(world: World) -> None:
    no_kbs = b'version = "0.1.0"\n[data]\npolicy = "allow_exec = false"\n'
    refused, res = world.ctr_run("app", no_kbs, "sleep", "60", detach=True)
    allowed, res2 = world.ctr_run("app", world.init["allow"], "sleep", "60", detach=True)
    try:
        assert res.returncode == 0 and res2.returncode == 0, (res.stderr, res2.stderr)
        ex = world.ctrd.ctr("tasks", "exec", "--exec-id", "steal", refused, *STEAL, check=False)
        assert ex.returncode != 0
        assert "allow_exec is not set" in ex.stderr and "Traceback" not in ex.stderr, ex.stderr
        deadline = time.monotonic() + 20
        while True:  # the agent may still be attesting
            ex = world.ctrd.ctr("tasks", "exec", "--exec-id", f"e{time.monotonic_ns()}",
                                allowed, "cat", "/run/arca/secrets/app.key", check=False)
            if ex.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert ex.returncode == 0, ex.stderr
        assert ex.stdout == SECRET_APP.decode()
        # while the TD holding the secret runs, its bundle and state hold no plaintext either
        assert files_containing([SECRET_APP], scan_roots(world)) == []
    finally:
        world.remove(refused)
        world.remove(allowed)


# -- replay -----------------------------------------------------------------------------------


def _captured_attest(world: World) -> tuple[dict[str, object], str]:
    """The last attest request a TD sent, and the token it received, from the proxy."""
    attest_body, token = None, None
    for ex in world.proxy.exchanges:
        req, resp = bytes(ex.request), bytes(ex.response)
        if req.startswith(b"POST /kbs/v0/attest") and b"\r\n\r\n" in resp:
            body = resp.split(b"\r\n\r\n", 1)[1]
            if resp.startswith(b"HTTP/1.1 200"):
                attest_body = json.loads(req.split(b"\r\n\r\n", 1)[1])
                token = json.loads(body)["token"]
    assert attest_body is not None and token is not None
    return attest_body, token


def test_captured_evidence_and_token_replayed_by_another_process_are_refused(
        world: World) -> None:
    from arca.guest import jwe

    _, res = world.ctr_run("app", world.init["strict"])
    assert res.returncode == 0, res.stderr
    attest, token = _captured_attest(world)
    kbs = world.kbs.url
    with httpx.Client(base_url=kbs, timeout=10) as http:
        # 1. the captured evidence in a new session: its nonce is not this session's
        r = http.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "sim",
                                            "extra-params": ""})
        assert r.status_code == 200
        r = http.post("/kbs/v0/attest", json=attest)
        assert r.status_code == 401 and "nonce" in r.text, r.text
        # 2. ... with the new nonce substituted: the evidence's report data no longer binds
        r = http.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "sim",
                                            "extra-params": ""})
        forged = json.loads(json.dumps(attest))
        forged["runtime-data"]["nonce"] = r.json()["nonce"]
        r = http.post("/kbs/v0/attest", json=forged)
        assert r.status_code == 401 and "report_data" in r.text, r.text
    # 3. the captured token: the resource comes back encrypted to the TD's key only
    r = httpx.get(f"{kbs}/kbs/v0/resource/default/key/app",
                  headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200 and SECRET_APP not in r.content
    with pytest.raises(Exception):  # noqa: B017,PT011 - any failure: a key we do not hold
        jwe.decrypt(r.json(), jwe.generate_key())
    # 4. the token re-signed around our own key is not the KBS's token
    head, claims, sig = token.split(".")
    doc = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    assert doc["tee-pubkey"]["crv"] == "X25519"  # what the guest made
    doc["tee-pubkey"] = jwe.public_jwk(jwe.generate_key())
    swapped = base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    r = httpx.get(f"{kbs}/kbs/v0/resource/default/key/app",
                  headers={"Authorization": f"Bearer {head}.{swapped}.{sig}"}, timeout=10)
    assert r.status_code == 401 and SECRET_APP not in r.content


# -- availability -----------------------------------------------------------------------------


def test_kbs_down_fails_after_the_retries_naming_the_kbs_then_recovers(world: World) -> None:
    from tests.support.kbs import start_kbs

    port = int(world.kbs.url.rsplit(":", 1)[1])
    world.kbs.kill()
    started = time.monotonic()
    _, res = world.ctr_run("app", world.init["strict"])
    took = time.monotonic() - started
    assert res.returncode == 125, (res.returncode, res.stderr)
    assert re.search(rf"KBS {re.escape(world.proxy.url)} unavailable after 2 attempts; "
                     r"last error: ", res.stderr), res.stderr
    assert took < 30
    world.kbs = start_kbs(world.kbs_dir, *world.kbs_args, port=port)
    _, res = world.ctr_run("app", world.init["strict"])
    assert res.returncode == 0, res.stderr
    assert output(res).startswith(SECRET_APP.decode())


def test_the_plaintext_scan_finds_a_planted_secret(world: World) -> None:
    """The scan run after every test can fail: a secret left in runtime state is found."""
    planted = pathlib.Path(world.env["ARCA_RUN"]) / "containers" / "planted.bin"
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(b"\0" * (1 << 20) + SECRET_APP[:5] + b"\n" + b"x" * 10)
    try:
        assert files_containing([SECRET_APP], [world.ctrd.root, planted.parent]) == []
        # across a read-chunk boundary
        planted.write_bytes(b"\0" * ((1 << 20) - 3) + SECRET_APP + b"\0")
        assert files_containing([SECRET_APP], [world.ctrd.root, planted.parent]) == [
            str(planted)]
    finally:
        planted.unlink()


# -- HTTPS with the KBS's CA pinned in init-data; `arca run` -----------------------------------


def _tls_init_data(url: str, ca_pem: str) -> bytes:
    raw = init_data(url).decode()
    return raw.replace("\nresources = ", f"\nkbs_cert = '''\n{ca_pem}'''\nresources = ",
                       1).encode()


def test_https_kbs_with_its_ca_in_init_data_and_a_foreign_ca_refused(world: World) -> None:
    """The TD talks TLS to the KBS named in init-data and trusts only the CA given there: a
    broker with a certificate from another CA (a host in the middle) gets nothing."""
    from arca.host.policygen import generate
    from arca.kbs.admin_client import AdminClient, load_admin_private_key
    from tests.support.kbs import make_tls, running_kbs

    tls_dir, other_dir = world.tmp / "tls", world.tmp / "tls-other"
    tls_dir.mkdir(exist_ok=True)
    other_dir.mkdir(exist_ok=True)
    ca, cert, key = make_tls(tls_dir)
    other_ca, _, _ = make_tls(other_dir)
    data = world.tmp / "kbs-tls"
    with running_kbs(data, *world.kbs_args, "--tls-cert", str(cert), "--tls-key", str(key),
                     scheme="https", verify=str(ca)) as kbs:
        good = _tls_init_data(kbs.url, ca.read_text())
        foreign = _tls_init_data(kbs.url, other_ca.read_text())
        admin = AdminClient(kbs.url, load_admin_private_key(world.kbs_dir / "admin.key"),
                            cacert=str(ca))
        try:
            admin.set_resource("default/key/app", SECRET_APP)
            values: dict[str, list[str]] = {}
            for raw in (good, foreign):
                gen = generate(f"oci:{world.layout}:app", init_data=raw)
                for name, v in gen.reference_values().items():
                    values.setdefault(name, []).extend(v)
            admin.set_policy("resource", gen.policy_text)
            for name, v in values.items():
                admin.set_reference_value(name, v)
        finally:
            admin.close()
        _, res = world.ctr_run("app", good)
        assert res.returncode == 0, res.stderr
        assert output(res).startswith(SECRET_APP.decode())
        _, res = world.ctr_run("app", foreign)
        assert res.returncode == 125, (res.stdout, res.stderr)
        assert f"KBS {kbs.url} unavailable after 2 attempts" in res.stderr
        assert "CERTIFICATE_VERIFY_FAILED" in res.stderr, res.stderr
        assert SECRET_APP.decode() not in res.stdout
        assert files_containing([SECRET_APP], [data]) == []


def test_arca_run_receives_the_secret_under_the_same_policy(world: World) -> None:
    """``arca run`` (Arca's own image store and bundle) measures like containerd: the grants
    generated from the image release the secret to it too."""
    res = world.arca("run", "--rm", "--init-data", str(world.tmp / "strict.toml"),
                     f"oci:{world.layout}:app", check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{SECRET_APP.decode()}\nmode=400 uid=1000\n"
    res = world.arca("run", "--rm", "--init-data", str(world.tmp / "strict.toml"),
                     f"oci:{world.layout}:app", *STEAL, check=False)
    assert res.returncode == 126 and DENIED_APP in res.stderr, res.stderr


def _hostile_runtime(world: World) -> str:
    """An OCI runtime that lets ``arca-runtime create`` measure the image's process, then
    swaps the process the agent is asked to run (``process.json`` in the TD directory): a
    compromised host keeping the measurement the broker accepts. The agent starts within
    ``create`` (ADR 0003), so the swap happens there, before it: in the ``runc run --detach``
    that ``create`` runs (a hostile runc)."""
    swap = world.tmp / "swap_process.py"
    swap.write_text(
        "import json, os, sys\n"
        "p = os.path.join(os.environ['ARCA_RUN'], 'td', sys.argv[1], 'process.json')\n"
        "proc = json.load(open(p))\n"
        f"proc['args'] = {STEAL!r}\n"
        "open(p, 'w').write(json.dumps(proc))\n")
    runc = world.tmp / "hostile-runc"
    runc.write_text(f'#!/bin/sh\nfor last; do :; done\ncase " $* " in *" --detach "*) '
                    f'"{sys.executable}" "{swap}" "$last" || exit 99;; esac\nexec runc "$@"\n')
    runc.chmod(0o755)
    script = world.tmp / "hostile-runtime"
    script.write_text(f'#!/bin/sh\nARCA_RUNC="{runc}" exec "{RUNTIME}" "$@"\n')
    script.chmod(0o755)
    return str(script)


def test_host_swapping_the_process_after_measurement_is_refused_by_the_agent(
        world: World) -> None:
    hostile = _hostile_runtime(world)
    for init, ok in (("strict", False), ("allow", True)):
        cid = f"s{RUN}-{uuid.uuid4().hex[:8]}"
        ann = ["--annotation", "io.arca.tee=sim", "--annotation",
               f"io.arca.init-data={base64.b64encode(world.init[init]).decode()}"]
        seen = len(world.proxy.exchanges)
        res = world.ctrd.ctr("run", "--rm", "--net-host", *world.ctrd.run_args(hostile), *ann,
                             world.images["app"], cid, check=False, timeout=90)
        if ok:  # the measured policy allows exactly this command: it gets the secret
            assert res.returncode == 0 and output(res) == SECRET_APP.decode(), res.stderr
        else:  # refused before the agent even talks to the KBS
            assert_refused(res, "execution policy: argument 2 'cat /run/arca/secrets/*' "
                                "differs from the measured command")
            assert len(world.proxy.exchanges) == seen
