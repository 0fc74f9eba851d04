"""The Kubernetes manifests under ``deploy/kubernetes``: schema-valid, and the KBS Deployment
runs as written.

Schemas: every object validates (strict: unknown fields refused) against the offline
OpenAPI schemas of ``kubernetes-validate`` for the oldest and newest Kubernetes versions we
name (1.30 and 1.37). No cluster runs here, so the Deployment is played by hand, as the
kubelet would: its ConfigMap and Secret volumes become files (Secrets with the Deployment's
``defaultMode`` and ``fsGroup``), ``$(VAR)`` in ``args`` is expanded from the container's
``env``, and the container's exact ``args`` run the real ``arca kbs serve`` as the
Deployment's non-root user, two replicas against one real PostgreSQL. The probes' path must
answer 200 over HTTPS on the probe port; the ConfigMap's policies are uploaded with the
documented ``arca kbs admin`` commands; a sim TD whose root the config trusts gets a secret
(admin on one replica, attestation on the other), one whose root it does not trust is refused.
"""

from __future__ import annotations

import copy
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib

import httpx
import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")

REPO = pathlib.Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
MANIFESTS = ("kbs.yaml", "runtimeclass.yaml")
#: Oldest and newest Kubernetes versions the manifests are declared valid for.
KUBE_VERSIONS = ("1.30.0", "1.37.0")
ARCA = str(pathlib.Path(sys.executable).parent / "arca")


def objects(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]


def kind(name: str, k: str) -> list[dict]:
    return [o for o in objects(name) if o["kind"] == k]


def one(name: str, k: str) -> dict:
    (found,) = kind(name, k)
    return found


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_validates_against_kubernetes_schemas(name: str, version: str) -> None:
    objs = objects(name)
    assert objs
    for obj in objs:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda d: d["spec"]["template"]["spec"]["containers"][0]["securityContext"]
                 .update(readOnlyRootFS=True), id="misspelt-field"),
    pytest.param(lambda d: d["spec"].update(replicas="two"), id="wrong-type"),
    pytest.param(lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"),
                 id="missing-required"),
])
def test_validator_refuses_a_broken_deployment(mutate) -> None:
    """The schema check is not a formality: the same Deployment, broken, is refused."""
    broken = copy.deepcopy(one("kbs.yaml", "Deployment"))
    mutate(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSIONS[-1], strict=True)


def test_runtimeclasses_match_the_containerd_handlers() -> None:
    handlers = {rc["handler"]: rc for rc in kind("runtimeclass.yaml", "RuntimeClass")}
    conf = tomllib.loads((REPO / "deploy" / "containerd" / "arca.toml").read_text())
    runtimes = conf["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
    assert set(handlers) == {"arca-sim", "arca-tdx", "arca-snp", "arca-sgx"}
    assert set(handlers) == {r for r in runtimes if r.startswith("arca-")}
    for name, rc in handlers.items():
        assert rc["metadata"]["name"] == name
        selector = rc["scheduling"]["nodeSelector"]
        assert selector["arca.io/runtime"] == "true"
        if name != "arca-sim":  # hardware: also a per-TEE label, and said so
            assert selector[f"arca.io/tee-{name.removeprefix('arca-')}"] == "true"
            assert "hardware" in rc["metadata"]["annotations"]["arca.io/requires"]


def test_kbs_deployment_is_hardened_and_consistent() -> None:
    dep = one("kbs.yaml", "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (ctr,) = pod["containers"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["replicas"] == 2
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"]
    sc = ctr["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert ctr["resources"]["requests"]["cpu"] and ctr["resources"]["requests"]["memory"]
    port = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    for probe in (ctr["readinessProbe"], ctr["livenessProbe"]):
        assert probe["httpGet"]["path"] == "/healthz"
        assert probe["httpGet"]["scheme"] == "HTTPS" and probe["httpGet"]["port"] in port
    svc, pdb = one("kbs.yaml", "Service"), one("kbs.yaml", "PodDisruptionBudget")
    assert svc["spec"]["selector"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] in port
    assert pdb["spec"]["minAvailable"] < dep["spec"]["replicas"]
    # Everything namespaced lives in the manifest's own Namespace.
    ns = one("kbs.yaml", "Namespace")["metadata"]["name"]
    for obj in objects("kbs.yaml"):
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == ns
    # The database URL (a password) never sits in the ConfigMap.
    assert "postgresql" not in one("kbs.yaml", "ConfigMap")["data"]["kbs.toml"]


def test_configmap_policies_are_the_builtin_defaults() -> None:
    data = one("kbs.yaml", "ConfigMap")["data"]
    policies = REPO / "src" / "arca" / "kbs" / "policies"
    for name in ("attestation.rego", "resource.rego"):
        assert data[name] == (policies / name).read_text()


# --- the Deployment, run as the kubelet would ---------------------------------------------

def _pg_available() -> bool:
    from tests.support.postgres import pg_bin

    return pg_bin() is not None and os.geteuid() == 0 and shutil.which("setpriv") is not None


class Pod:
    """The KBS Deployment's pod template laid out on this machine under ``root``: each
    volumeMount path P becomes ``root/P``, so every absolute path of the manifest is mapped
    by :meth:`path`."""

    def __init__(self, root: pathlib.Path, secrets: dict[str, dict[str, bytes]],
                 config_maps: dict[str, dict[str, str]]) -> None:
        self.root = root
        self.dep = one("kbs.yaml", "Deployment")
        self.spec = self.dep["spec"]["template"]["spec"]
        (self.ctr,) = self.spec["containers"]
        self.uid = self.spec["securityContext"]["runAsUser"]
        self.gid = self.spec["securityContext"]["runAsGroup"]
        self.fs_group = self.spec["securityContext"]["fsGroup"]
        self.secrets = secrets
        self.mounts = {m["name"]: m["mountPath"] for m in self.ctr["volumeMounts"]}
        for vol in self.spec["volumes"]:
            target = self.path(self.mounts[vol["name"]])
            target.mkdir(parents=True, exist_ok=True)
            if "configMap" in vol:
                src = config_maps.get(vol["configMap"]["name"])
                if src is None:
                    assert vol["configMap"].get("optional"), vol
                    continue
                items = vol["configMap"].get("items") or [{"key": k, "path": k} for k in src]
                for item in items:
                    self._file(target / item["path"], src[item["key"]].encode(), 0o644)
            elif "secret" in vol:
                mode = vol["secret"]["defaultMode"]
                for key, value in secrets[vol["secret"]["secretName"]].items():
                    self._file(target / key, value, mode)
            else:
                assert "emptyDir" in vol
                os.chown(target, 0, self.fs_group)
                target.chmod(0o2775)

    def _file(self, p: pathlib.Path, data: bytes, mode: int) -> None:
        p.write_bytes(data)
        os.chown(p, 0, self.fs_group)  # the kubelet gives volume files to the fsGroup
        p.chmod(mode)

    def path(self, abs_path: str) -> pathlib.Path:
        return self.root / abs_path.lstrip("/")

    def remap(self, text: str) -> str:
        # One pass, longest mount first, only at the start of a path: a mapped path is
        # never mapped again (the /tmp mount would match inside /tmp/arca-deploy-...).
        mounts = sorted(self.mounts.values(), key=len, reverse=True)
        pattern = r"(?<![\w./-])(" + "|".join(map(re.escape, mounts)) + r")(?=/|\b|$)"
        return re.sub(pattern, lambda m: str(self.path(m.group(1))), text)

    def argv(self) -> list[str]:
        env = self.env()
        args = [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m.group(1)], a)
                for a in self.ctr["args"]]
        assert self.ctr["command"] == ["arca"]
        return [ARCA, *(self.remap(a) for a in args)]

    def env(self) -> dict[str, str]:
        out = {}
        for e in self.ctr["env"]:
            if "valueFrom" in e:
                ref = e["valueFrom"]["secretKeyRef"]
                out[e["name"]] = self.secrets[ref["name"]][ref["key"]].decode()
            else:
                out[e["name"]] = self.remap(e["value"])
        return out

    def start(self, log: pathlib.Path) -> subprocess.Popen[bytes]:
        env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", **self.env()}
        user = (["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}",
                 f"--groups={self.fs_group}", "--no-new-privs", "--"]
                if interpreter_reachable_by_others() else [])
        with open(log, "wb") as out:
            return subprocess.Popen([*user, *self.argv()], stdout=out,
                                    stderr=subprocess.STDOUT, env=env, cwd="/",
                                    start_new_session=True)


def interpreter_reachable_by_others() -> bool:
    """Whether another user can run this venv's interpreter. Not when it is a pyenv build
    under /root (mode 0700): the KBS's uvicorn workers, started from ``sys.executable``,
    then die. In an image (and on a machine set up with the system Python) it is reachable
    and the KBS runs as the Deployment's user."""
    path = pathlib.Path(os.path.realpath(sys.executable))
    return all(os.stat(d).st_mode & 0o001 for d in path.parents) and bool(
        os.stat(path).st_mode & 0o001)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: pathlib.Path,
               timeout: float = 60) -> httpx.Response:
    """Poll the probe URL as the kubelet does (HTTPS, certificate not verified)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"KBS exited ({proc.returncode}): {log.read_text()[-3000:]}")
        try:
            r = httpx.get(url, verify=False, timeout=2)  # noqa: S501 (kubelet probes do not verify)
            if r.status_code == 200:
                return r
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"KBS not ready at {url}: {log.read_text()[-3000:]}")
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(not _pg_available(), reason="needs root, PostgreSQL and setpriv")
def test_kbs_deployment_runs_as_written() -> None:
    from arca.guest.kbs_client import KbsClient
    from arca.wire.errors import ArcaError
    from tests.support.kbs import MEASUREMENT, SimAuthority, admin_keypair, make_tls
    from tests.support.postgres import postgres_cluster
    from tests.support.registry import free_port

    # A directory the Deployment's user can traverse (pytest's tmp_path is 0700 root).
    root = pathlib.Path(tempfile.mkdtemp(prefix="arca-deploy-", dir="/tmp"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        root.chmod(0o755)
        keys = root / "operator"
        keys.mkdir(mode=0o700)
        ca, crt, key = make_tls(keys)
        admin_key, admin_pub = admin_keypair(keys)
        sim, stranger = SimAuthority(), SimAuthority(name="Untrusted Sim Root")
        cm = one("kbs.yaml", "ConfigMap")
        config = tomllib.loads(cm["data"]["kbs.toml"])
        # The sim root file name the config lists (the operator's ConfigMap provides it).
        (sim_root,) = config["trust_sim_root"]
        dep_ctr = one("kbs.yaml", "Deployment")["spec"]["template"]["spec"]["containers"][0]
        (probe_port,) = {p["containerPort"] for p in dep_ctr["ports"]
                         if p["name"] == dep_ctr["readinessProbe"]["httpGet"]["port"]}
        assert config["listen"] == f"0.0.0.0:{probe_port}"
        with postgres_cluster() as db_url:
            secrets = {
                "arca-kbs-db": {"url": db_url.encode()},
                "arca-kbs-kek": {"kek.bin": os.urandom(32)},
                "arca-kbs-tls": {"tls.crt": crt.read_bytes(), "tls.key": key.read_bytes()},
                "arca-kbs-admin": {"admin.pub": admin_pub.read_bytes()},
            }
            replicas = one("kbs.yaml", "Deployment")["spec"]["replicas"]
            urls = []
            for i in range(replicas):
                port = free_port()
                cms = {"arca-kbs-sim-roots": {pathlib.Path(sim_root).name: sim.root_pem.decode()},
                       # Each replica on its own port here (one network namespace).
                       "arca-kbs-config": {**cm["data"], "kbs.toml": cm["data"]["kbs.toml"]
                                           .replace(f"0.0.0.0:{probe_port}", f"127.0.0.1:{port}")}}
                pod = Pod(root / f"pod-{i}", secrets, cms)
                # The config file as the KBS sees it: paths of this pod's volumes.
                conf = pod.path(dep_ctr["args"][dep_ctr["args"].index("--config") + 1])
                conf.write_text(pod.remap(conf.read_text()))
                procs.append(pod.start(root / f"kbs-{i}.log"))
                urls.append(f"https://127.0.0.1:{port}")
            for url, proc, i in zip(urls, procs, range(replicas), strict=True):
                r = wait_ready(url + dep_ctr["readinessProbe"]["httpGet"]["path"], proc,
                               root / f"kbs-{i}.log")
                assert r.json() == {"status": "ok"}
                if interpreter_reachable_by_others():  # the Deployment's user, not root
                    status = pathlib.Path(f"/proc/{proc.pid}/status").read_text()
                    assert re.search(rf"^Uid:\s+{pod.uid}\s", status, re.M), status

            def admin(url: str, *args: str) -> str:
                res = subprocess.run([ARCA, "kbs", "admin", "--url", url, "--admin-key",
                                      str(keys / "admin.key"), "--cacert", str(ca), *args],
                                     capture_output=True, text=True, timeout=60)
                assert res.returncode == 0, res.stderr
                return res.stdout

            for kind_, name in (("attestation", "attestation.rego"),
                                ("resource", "resource.rego")):
                (keys / name).write_text(cm["data"][name])
                admin(urls[0], f"set-{kind_}-policy", "--file", str(keys / name))
                assert cm["data"][name].strip() in admin(urls[1], "get-policy", kind_)
            (keys / "secret").write_bytes(b"s3cret-from-the-deployed-kbs")
            admin(urls[0], "set-resource", "default/app/password", "--file",
                  str(keys / "secret"))
            admin(urls[0], "set-reference-value", "sim.measurement", MEASUREMENT.hex())
            time.sleep(1.1)  # the other replica's policy/reference cache (1 s)
            got = KbsClient(urls[1], tee="sim", evidence=sim.evidence,
                            ca_pem=ca.read_bytes()).get_resource("default/app/password")
            assert got == b"s3cret-from-the-deployed-kbs"
            with pytest.raises(ArcaError):
                KbsClient(urls[1], tee="sim", evidence=stranger.evidence,
                          ca_pem=ca.read_bytes()).get_resource("default/app/password")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)
