"""CRI end to end: a real containerd with the CRI plugin driven over gRPC as the kubelet
drives it, with the ``arca-sim`` handler of ``deploy/containerd/arca.toml``.

RunPodSandbox (host network: no CNI) with handler ``arca-sim`` and the pod annotation
``io.arca.init-data``, then PullImage / CreateContainer / StartContainer of an application
container. The sandbox (pause) container passes through to runc untouched (no Arca state, no
TD); the application container runs in a sim TD, attests to a real KBS and prints the secret
it released, which shows in the container's CRI log file. A pod whose init-data the policy
does not know gets nothing: its container exits 126 with the broker's reason in its log.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from tests.support.containerd import containerd_available, run_containerd
from tests.support.cri import CriClient, grpc_available
from tests.support.images import build_busybox_image, push
from tests.support.registry import registry_available, run_registry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not (containerd_available() and registry_available() and grpc_available()
                            and os.geteuid() == 0),
                       reason="needs root, containerd, docker-registry and grpcio"),
]

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
ARCA = str(BIN / "arca")
SECRET = f"cri-secret-{uuid.uuid4().hex}"
APP_CMD = ["sh", "-c", "echo secret=$(cat /run/arca/secrets/app.key)"]
CRI_NS = "k8s.io"  # containerd's CRI namespace, fixed


def init_data(kbs_url: str, resource: str) -> bytes:
    return (f'version = "0.1.0"\nalgorithm = "sha384"\n\n[data]\nkbs_url = "{kbs_url}"\n'
            f"resources = '''\n[[resource]]\npath = \"{resource}\"\nname = \"app.key\"\n'''\n"
            "agent = '''\nkbs_timeout = 3.0\nkbs_retries = 1\nkbs_backoff = 0.2\n"
            "insecure_kbs = true\n'''\n"
            ).encode()


def cri_config(wrapper: pathlib.Path, registry: str, sandbox_image: str) -> str:
    """The handlers exactly as shipped (BinaryName pointing at this test's wrapper), plus
    what a node has anyway: a pause image and access to the (plain HTTP) registry."""
    dropin = (REPO / "deploy" / "containerd" / "arca.toml").read_text()
    dropin = "\n".join(ln for ln in dropin.splitlines() if not ln.startswith("version"))
    dropin = dropin.replace("/opt/arca/bin/arca-runtime-sim", str(wrapper))
    cri = '[plugins."io.containerd.grpc.v1.cri"'
    # restrict_oom_score_adj: the sandbox asks for oom_score_adj -998, which needs
    # CAP_SYS_RESOURCE; test machines running in a container often lack it.
    return (f'\n{cri}]\n  sandbox_image = "{sandbox_image}"\n  restrict_oom_score_adj = true\n'
            f'{cri}.registry.mirrors."{registry}"]\n  endpoint = ["http://{registry}"]\n'
            + dropin)


class Pod:
    def __init__(self, cri: CriClient, logs: pathlib.Path, name: str,
                 annotations: dict[str, str]) -> None:
        pb = cri.pb
        self.cri, self.pb = cri, pb
        self.logs = logs / name
        self.logs.mkdir(parents=True)
        self.config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uuid.uuid4().hex, namespace="default"),
            log_directory=str(self.logs), annotations=annotations,
            linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.NODE))))
        self.id = cri.call(cri.runtime, "RunPodSandbox", config=self.config,
                           runtime_handler="arca-sim").pod_sandbox_id
        self.containers: list[str] = []

    def run(self, image: str, name: str, timeout: float = 90) -> tuple[int, str]:
        """Create and start a container, wait for it to exit: (exit code, its log)."""
        pb, cri = self.pb, self.cri
        cfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=image),
            log_path=f"{name}.log", linux=pb.LinuxContainerConfig(
                security_context=pb.LinuxContainerSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER))))
        cid = cri.call(cri.runtime, "CreateContainer", pod_sandbox_id=self.id, config=cfg,
                       sandbox_config=self.config).container_id
        self.containers.append(cid)
        cri.call(cri.runtime, "StartContainer", container_id=cid)
        deadline = time.monotonic() + timeout
        while True:
            st = cri.call(cri.runtime, "ContainerStatus", container_id=cid).status
            if st.state == pb.CONTAINER_EXITED:
                break
            assert time.monotonic() < deadline, f"container {name} still {st.state}"
            time.sleep(0.2)
        # CRI log format: "<time> <stream> <P|F> <text>" per line.
        lines = (self.logs / f"{name}.log").read_text().splitlines()
        return st.exit_code, "\n".join(ln.split(" ", 3)[3] for ln in lines if ln.count(" ") >= 3)

    def remove(self) -> None:
        cri = self.cri
        for cid in self.containers:
            cri.call(cri.runtime, "StopContainer", container_id=cid, timeout=0)
            cri.call(cri.runtime, "RemoveContainer", container_id=cid)
        cri.call(cri.runtime, "StopPodSandbox", pod_sandbox_id=self.id)
        cri.call(cri.runtime, "RemovePodSandbox", pod_sandbox_id=self.id)


def test_pod_through_cri_gets_its_secret_after_attestation(tmp_path: pathlib.Path) -> None:
    from arca.host.simtee import client, locations
    from tests.support.kbs import admin_keypair, running_kbs

    short_run = tempfile.mkdtemp(prefix="arc-", dir="/tmp")  # TD sockets: short sun_path
    env_vars = {"ARCA_ROOT": str(tmp_path / "arca-root"), "ARCA_RUN": short_run}
    mp = pytest.MonkeyPatch()
    for k, v in env_vars.items():
        mp.setenv(k, v)
    env = {**os.environ, **env_vars}
    layout = tmp_path / "layout"
    build_busybox_image(layout, "pause", cmd=["sleep", "100000"])
    build_busybox_image(layout, "app", cmd=APP_CMD)
    # The handler's wrapper, as install.sh writes it (default TEE sim).
    wrapper = tmp_path / "arca-runtime-sim"
    wrapper.write_text(f"#!/bin/sh\nexport ARCA_TEE=sim\nexec {BIN / 'arca-runtime'} \"$@\"\n")
    wrapper.chmod(0o755)
    pods: list[Pod] = []
    try:
        client.ensure_running()
        kbs_dir = tmp_path / "kbs"
        kbs_dir.mkdir()
        admin_key, admin_pub = admin_keypair(kbs_dir)
        with run_registry(tmp_path / "registry") as reg, \
                running_kbs(kbs_dir, "--trust-sim-root", str(locations.root_cert_path()),
                            "--admin-public-key", str(admin_pub)) as kbs:
            images = {t: push(f"{layout}:{t}", reg.host, f"cri:{t}") for t in ("pause", "app")}

            def edit(conf: pathlib.Path) -> None:
                conf.write_text(conf.read_text() + cri_config(wrapper, reg.host, images["pause"]))

            # The tenant: secret, generated policy for image + init-data, reference values.
            good, unknown = init_data(kbs.url, "default/key/app"), init_data(
                kbs.url + "/", "default/key/app")  # same meaning, other bytes: other hash
            (tmp_path / "init.toml").write_bytes(good)

            def arca(*args: str) -> str:
                res = subprocess.run([ARCA, *args], env=env, capture_output=True, text=True,
                                     timeout=300)
                assert res.returncode == 0, res.stderr
                return res.stdout

            gen = json.loads(arca("policy", "generate", f"oci:{layout}:app", "--tee", "sim",
                                  "--init-data", str(tmp_path / "init.toml"), "--out-dir",
                                  str(tmp_path / "policy"), "--json"))
            (tmp_path / "secret").write_text(SECRET)
            admin = ["kbs", "admin", "--url", kbs.url, "--admin-key", str(kbs_dir / "admin.key")]
            arca(*admin, "set-resource", "default/key/app", "--file", str(tmp_path / "secret"))
            arca(*admin, "set-resource-policy", "--file",
                 str(tmp_path / "policy" / "resource-policy.rego"))
            for name, values in gen["reference_values"].items():
                arca(*admin, "set-reference-value", name, *values)

            with run_containerd(tmp_path / "ctrd", env=env_vars, enable_cri=True,
                                before_start=edit) as ctrd:
                cri = CriClient(ctrd.address)
                try:
                    version = cri.call(cri.runtime, "Version", version="v1")
                    assert version.runtime_name == "containerd"
                    cri.call(cri.images, "PullImage", image=cri.pb.ImageSpec(image=images["app"]))

                    pod = Pod(cri, tmp_path / "logs", "attested", {
                        "io.arca.init-data": base64.b64encode(good).decode()})
                    pods.append(pod)
                    # The sandbox went straight to runc: no Arca state, no TD.
                    assert not (pathlib.Path(short_run) / "containers" / pod.id).exists()
                    assert pod.id not in {td["td_id"] for td in client.list_tds()}
                    code, log = pod.run(images["app"], "app")
                    assert code == 0, log
                    assert f"secret={SECRET}" in log

                    refused = Pod(cri, tmp_path / "logs", "unknown-init-data", {
                        "io.arca.init-data": base64.b64encode(unknown).decode()})
                    pods.append(refused)
                    code, log = refused.run(images["app"], "app")
                    assert code == 126, log
                    assert "PolicyDeny" in log and SECRET not in log
                except Exception:
                    print(ctrd.log_tail(6000))  # containerd's side of a CRI failure
                    raise
                finally:
                    for p in pods:  # all of them, whatever one of them says
                        try:
                            p.remove()
                        except Exception as e:
                            print(f"removing pod {p.id}: {e}")
                    pods.clear()
                    cri.close()
    finally:
        client.stop()
        mp.undo()
        shutil.rmtree(short_run, ignore_errors=True)
        # The CRI shims keep runc state under containerd's fixed default root (empty now).
        try:
            pathlib.Path("/run/containerd/runc", CRI_NS).rmdir()
        except OSError:
            pass
        for controller in pathlib.Path("/sys/fs/cgroup").iterdir():
            for d in (controller / CRI_NS, controller.parent / CRI_NS):
                if d.is_dir() and d.parent == controller:
                    try:
                        d.rmdir()
                    except OSError:
                        pass
