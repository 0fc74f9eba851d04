"""Issue 13 items 1, 5, 6 and issue 11 §3 as attacks through real containerd (``ctr run
--runc-binary arca-runtime``) and ``arca run``: a bind mount over the image's code, another
container joining a TD's PID namespace (``kubectl debug --target``), an orchestrator variable
replacing a value the image defines, and init-data naming an unauthenticated broker. Each is
refused with a message naming what, before any secret could be fetched, leaving nothing."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pathlib
import time
from collections.abc import Iterator

import pytest

from tests.integration.test_containerd_sim import RUNTIME, SIM, assert_nothing_left
from tests.support.arca_run import NEEDS_ROOT_RUNC_UMOCI, arca, arca_env
from tests.support.containerd import containerd_available, ctr_world
from tests.support.images import build_busybox_image
from tests.support.registry import registry_available

pytestmark = [pytest.mark.integration]
NEEDS_CTR = pytest.mark.skipif(not (containerd_available() and registry_available()
                                    and os.geteuid() == 0),
                               reason="needs root, containerd, ctr and docker-registry")
EVIDENCE = ["cat", "/run/arca/evidence.json"]
RUN = os.urandom(3).hex()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    if not (containerd_available() and registry_available() and os.geteuid() == 0):
        pytest.skip("needs root, containerd, ctr and docker-registry")
    tmp = tmp_path_factory.mktemp("tdb-ctr")
    layout = tmp / "layout"
    build_busybox_image(layout, "svc", cmd=EVIDENCE,
                        env=["BACKEND_SERVICE_HOST=backend.tenant.example", "PATH=/bin"])
    with ctr_world(tmp, layout, ("svc",)) as (ctrd, images, _):
        yield ctrd, images["svc"], tmp


def _run(ctrd, image: str, cid: str, *cmd: str, extra: tuple[str, ...] = (),  # type: ignore[no-untyped-def]
         tee: bool = True, rm: bool = True):
    return ctrd.ctr("run", *(["--rm"] if rm else []), *ctrd.run_args(RUNTIME),
                    *(SIM if tee else ()), *extra, image, cid, *cmd, check=False, timeout=60)


@contextlib.contextmanager
def _detached_td(ctrd, image: str, td: str, *extra: str) -> Iterator[int]:  # type: ignore[no-untyped-def]
    """A TD container ``td`` running ``sleep 60`` detached; yields its workload's host pid,
    then kills and deletes it and checks that nothing is left."""
    res = _run(ctrd, image, td, "sleep", "60", extra=("-d", *extra), rm=False)
    assert res.returncode == 0, res.stderr
    try:
        yield next(int(line.split()[1]) for line in ctrd.ctr("tasks", "ls").stdout.splitlines()
                   if line.split()[:1] == [td])
    finally:
        ctrd.ctr("tasks", "kill", "-s", "SIGKILL", td, check=False)
        deadline = time.monotonic() + 10
        while ctrd.ctr("tasks", "delete", td, check=False).returncode != 0 \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        ctrd.ctr("containers", "delete", td, check=False)
    assert_nothing_left(ctrd, td)


def _volume_and_tenant(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A volume holding ``f`` (``volume-data``) and a tenant's init-data that allows mounts
    at /data only."""
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "f").write_text("volume-data\n")
    tenant = tmp_path / "init.toml"
    tenant.write_text('version = "0.1.0"\n[data]\npolicy = \'{"allow_mounts": ["/data"]}\'\n')
    return vol, tenant


@NEEDS_CTR
def test_ctr_bind_mount_over_the_images_code_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    ctrd, image, tmp = world
    evil = tmp / "evil-bin"
    evil.mkdir(exist_ok=True)
    (evil / "cat").write_text("#!/bin/sh\necho host-code-ran\n")
    (evil / "cat").chmod(0o755)
    cid = f"ctr-mnt-{RUN}"
    res = _run(ctrd, image, cid, extra=("--mount",
                                        f"type=bind,src={evil},dst=/bin,options=rbind:ro"))
    assert res.returncode != 0 and "host-code-ran" not in res.stdout, res.stdout
    assert "mount of" in res.stderr and "'/bin'" in res.stderr, res.stderr
    assert_nothing_left(ctrd, cid)


@NEEDS_CTR
def test_ctr_container_cannot_join_a_tds_pid_namespace(world) -> None:  # type: ignore[no-untyped-def]
    ctrd, image, _ = world
    with _detached_td(ctrd, image, f"ctr-td-{RUN}") as pid:
        dbg = f"ctr-dbg-{RUN}"
        res = _run(ctrd, image, dbg, "cat", "/proc/1/root/run/arca/tee/descriptor.json",
                   extra=("--with-ns", f"pid:/proc/{pid}/ns/pid"), tee=False)
        assert res.returncode != 0 and "measurement" not in res.stdout, res.stdout
        assert "joining the pid namespace of a trust domain" in res.stderr, res.stderr
        assert_nothing_left(ctrd, dbg)


def _measurement(stdout: str) -> str:
    from arca.wire.simreport import SimEvidence

    doc = json.loads(stdout)
    return SimEvidence.from_bytes(base64.b64decode(doc["evidence"])).report().measurement.hex()


@NEEDS_CTR
def test_ctr_orchestrator_variable_cannot_replace_the_images_value(world) -> None:  # type: ignore[no-untyped-def]
    """The image says where its backend is; a service-link variable of the host's choosing
    must not move it without changing what is measured (so the broker would not release)."""
    ctrd, image, _ = world
    honest = _run(ctrd, image, f"ctr-env1-{RUN}")
    steered = _run(ctrd, image, f"ctr-env2-{RUN}",
                   extra=("--env", "BACKEND_SERVICE_HOST=attacker.example"))
    assert honest.returncode == 0 and steered.returncode == 0, (honest.stderr, steered.stderr)
    assert _measurement(honest.stdout) != _measurement(steered.stdout)
    assert_nothing_left(ctrd, f"ctr-env2-{RUN}")


@NEEDS_CTR
def test_ctr_unauthenticated_broker_is_refused_unless_init_data_says_so(world) -> None:  # type: ignore[no-untyped-def]
    ctrd, image, _ = world
    init = b'version = "0.1.0"\n[data]\nkbs_url = "http://127.0.0.1:9"\n'
    cid = f"ctr-kbs-{RUN}"
    res = _run(ctrd, image, cid, extra=(
        "--annotation", f"io.arca.init-data={base64.b64encode(init).decode()}"))
    assert res.returncode != 0
    assert "is not authenticated" in res.stderr and "insecure_kbs" in res.stderr, res.stderr
    assert_nothing_left(ctrd, cid)


@NEEDS_ROOT_RUNC_UMOCI
def test_arca_run_volume_over_measured_content_or_outside_the_policy_is_refused(
        tmp_path: pathlib.Path) -> None:
    layout = tmp_path / "layout"
    build_busybox_image(layout, "v1")
    image = f"oci:{layout}:v1"
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "sh").write_text("#!/bin/cat\n")
    vol, tenant = _volume_and_tenant(tmp_path)
    with arca_env(tmp_path, "tdbv-") as env:
        # Over the image's /bin: refused even though -v itself asked for it.
        res = arca(env, "run", "--rm", "-v", f"{evil}:/bin", image, "sh", "-c", "echo ran")
        assert res.returncode != 0 and "ran" not in res.stdout, res.stdout
        assert "at '/bin'" in res.stderr and "measured content" in res.stderr, res.stderr
        # The tenant's init-data allows /data only: /conf is refused, /data lands.
        res = arca(env, "run", "--rm", "--init-data", str(tenant), "-v", f"{vol}:/conf", image,
                   "cat", "/conf/f")
        assert res.returncode != 0 and "volume-data" not in res.stdout, res.stdout
        assert "at '/conf'" in res.stderr and "policy.allow_mounts" in res.stderr, res.stderr
        res = arca(env, "run", "--rm", "--init-data", str(tenant), "-v", f"{vol}:/data", image,
                   "cat", "/data/f")
        assert res.returncode == 0 and res.stdout == "volume-data\n", res.stderr
        assert json.loads(arca(env, "ps", "-a", "--json").stdout) == []


@NEEDS_ROOT_RUNC_UMOCI
def test_arca_measure_predicts_an_arca_run_with_volumes(tmp_path: pathlib.Path) -> None:
    """The allowed mounts are measured (the init-data ``arca run -v`` generates) and
    predictable: ``arca measure -v DST`` gives the measurement and init-data hash the TD's
    evidence carries."""
    from arca.wire.simreport import SimEvidence

    layout = tmp_path / "layout"
    build_busybox_image(layout, "ev", cmd=EVIDENCE)
    image = f"oci:{layout}:ev"
    vol = tmp_path / "vol"
    vol.mkdir()
    with arca_env(tmp_path, "tdbm-") as env:
        m = arca(env, "measure", image, "-v", "/data", "--json")
        assert m.returncode == 0, m.stderr
        predicted = json.loads(m.stdout)
        assert "/data" in predicted["allowed_mounts"]
        pol = arca(env, "policy", "generate", image, "-v", "/data", "--resource", "d/k/a",
                   "--out-dir", str(tmp_path / "pol"), "--json")
        assert pol.returncode == 0, pol.stderr
        assert json.loads(pol.stdout)["init_data_hash"] == predicted["init_data_hash"]
        assert json.loads(pol.stdout)["measurements"] == [predicted["measurement"]]
        res = arca(env, "run", "--rm", "-v", f"{vol}:/data", image)
        assert res.returncode == 0, res.stderr
        report = SimEvidence.from_bytes(base64.b64decode(json.loads(res.stdout)["evidence"])
                                        ).report()
        assert report.measurement.hex() == predicted["measurement"]
        assert report.init_data_hash.hex() == predicted["init_data_hash"][:96]


@NEEDS_ROOT_RUNC_UMOCI
def test_arca_policy_generate_warns_about_patterns_that_admit_host_code(
        tmp_path: pathlib.Path) -> None:
    """Issue 13 item 7, through the CLI: the docs' old example is flagged, the output written."""
    layout = tmp_path / "layout"
    build_busybox_image(layout, "v1")
    init = tmp_path / "init.toml"
    init.write_text('version = "0.1.0"\n[data]\npolicy = \'{"allow_args": '
                    '[["/bin/sh", "-c", "echo *"]]}\'\n')
    with arca_env(tmp_path, "tdbp-") as env:
        res = arca(env, "policy", "generate", f"oci:{layout}:v1", "--init-data", str(init),
                   "--resource", "default/key/app", "--out-dir", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    assert "warning: allow_args entry ['/bin/sh', '-c', 'echo *'] runs '/bin/sh'" in res.stderr
    assert (tmp_path / "out" / "reference-values.json").exists()


# -- item 2: a TD's workload runs under host ids of its own (ADR 0048) -------------------------

_OWNERS = "stat -c %u:%g /bin/busybox; touch /etc/td-wrote && echo wrote; id -u"


@NEEDS_CTR
def test_ctr_td_workload_runs_under_a_host_uid_of_its_own(world) -> None:  # type: ignore[no-untyped-def]
    """Through containerd: the image's files are root's inside and writable by the TD's root,
    whose host uid is a range of the registry no local user has; a local user cannot read the
    TD's /proc; everything is released at delete."""
    import pwd

    from arca.host.runtime import userns

    ctrd, image, _ = world
    res = _run(ctrd, image, f"ctr-owners-{RUN}", "sh", "-c", _OWNERS)
    assert res.returncode == 0 and res.stdout.split() == ["0:0", "wrote", "0"], res.stderr
    td = f"ctr-uid-{RUN}"
    with _detached_td(ctrd, image, td, "--env", "TOKEN=ctr-secret-4711") as pid:
        deadline = time.monotonic() + 20
        while "sleep" not in pathlib.Path(f"/proc/{pid}/cmdline").read_text():
            assert time.monotonic() < deadline, "the workload never ran"
            time.sleep(0.05)
        host = int(next(line.split()[1] for line in pathlib.Path(f"/proc/{pid}/status")
                        .read_text().splitlines() if line.startswith("Uid:")))
        slot = (host - userns.BASE) // userns.SIZE
        assert host == userns.host_id(slot) and 0 <= slot < userns.SLOTS, host
        with pytest.raises(KeyError):
            pwd.getpwuid(host)
        r, w = os.pipe()
        child = os.fork()
        if child == 0:  # a local user (uid 1000; container root's host uid is no one's)
            os.setgroups([])
            os.setgid(1000)
            os.setuid(1000)
            try:
                got = pathlib.Path(f"/proc/{pid}/environ").read_bytes()
            except PermissionError:
                got = b"denied"
            os.write(w, got[:200])
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            assert f.read() == b"denied"
        os.waitpid(child, 0)
    assert not os.path.exists(f"{userns.REGISTRY}/{slot}/{userns.OWNER}") \
        or userns.owner_of(slot) != str(pathlib.Path(os.environ["ARCA_RUN"]) / "containers" / td)


@NEEDS_ROOT_RUNC_UMOCI
def test_arca_run_td_sees_the_images_owners_and_reads_a_volume(tmp_path: pathlib.Path) -> None:
    """``arca run``: the same id-mapped root over the image's layers, writable by the TD's
    root, stopped and started again (its changes shifted to the new range); a volume of host
    files is readable (owned by ``nobody`` inside: docs/threat-model.md)."""
    layout = tmp_path / "layout"
    build_busybox_image(layout, "v1")
    image = f"oci:{layout}:v1"
    vol, tenant = _volume_and_tenant(tmp_path)
    with arca_env(tmp_path, "tdbu-") as env:
        res = arca(env, "run", "--rm", "--init-data", str(tenant), "-v", f"{vol}:/data", image,
                   "sh", "-c", f"{_OWNERS}; cat /data/f")
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == ["0:0", "wrote", "0", "volume-data"], res.stdout
        # Stopped and started again: what it wrote is still its own.
        res = arca(env, "run", "--name", "again", image, "sh", "-c",
                   "test -e /etc/td-wrote && cat /etc/td-wrote; echo x > /etc/td-wrote; "
                   "stat -c %u /etc/td-wrote")
        assert res.returncode == 0 and res.stdout.split() == ["0"], (res.stdout, res.stderr)
        res = arca(env, "start", "again")
        assert res.returncode == 0, res.stderr
        assert arca(env, "wait", "again").stdout.strip() == "0"
        res = arca(env, "logs", "again")
        assert res.stdout.split()[-2:] == ["x", "0"], (res.stdout, res.stderr)
        arca(env, "rm", "again")
        assert json.loads(arca(env, "ps", "-a", "--json").stdout) == []
