"""Issue 15: ``arca ps`` / ``arca inspect`` show each TD's backend, measurement, broker and
attestation verdict (as the TD reports it), and a refusal says which measurement was refused
and why, end to end: ``arca run --tee sim`` against a real ``arca kbs serve`` whose reference
values are ``arca policy generate``'s for the image's own command."""

from __future__ import annotations

import json
import pathlib
import time

import pytest

from arca.kbs.admin_client import AdminClient
from tests.support.arca_run import NEEDS_ROOT_RUNC_UMOCI, arca, arca_env
from tests.support.images import build_busybox_image
from tests.support.kbs import admin_keypair, running_kbs

pytestmark = [pytest.mark.integration, NEEDS_ROOT_RUNC_UMOCI]

SECRET = b"td-verdict-secret"
#: ps must show names this long in full, and keep its columns aligned.
LONG = "a-container-name-much-longer-than-any-column-" + "x" * 60


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("verdict")
    layout = tmp / "layout"
    build_busybox_image(layout, "v1", cmd=["sh", "-c", "cat /run/arca/secrets/key; sleep 30"])
    image = f"oci:{layout}:v1"
    with arca_env(tmp, "atv-") as env:
        root = arca(env, "simtee", "root-cert", "--path")
        assert root.returncode == 0, root.stderr
        key, pub = admin_keypair(tmp)
        with running_kbs(tmp / "kbs", "--trust-sim-root", root.stdout.strip(),
                         "--admin-public-key", str(pub)) as kbs:
            init = tmp / "init-data.toml"
            init.write_text(f'version = "0.1.0"\nalgorithm = "sha384"\n\n[data]\n'
                            f'kbs_url = "{kbs.url}"\nresources = \'\'\'\n[[resource]]\n'
                            'path = "default/app/key"\nname = "key"\n\'\'\'\n'
                            "agent = '''\nkbs_retries = 0\ninsecure_kbs = true\n'''\n")
            res = arca(env, "policy", "generate", image, "--tee", "sim", "--init-data",
                       str(init), "--out-dir", str(tmp / "p"))
            assert res.returncode == 0, res.stderr
            admin = AdminClient(kbs.url, key)
            admin.set_reference_values(json.loads((tmp / "p/reference-values.json").read_text()))
            admin.set_policy("resource", (tmp / "p/resource-policy.rego").read_text())
            admin.set_resource("default/app/key", SECRET)
            admin.close()
            yield {"env": env, "image": image, "init": str(init), "kbs": kbs.url}


def ps_row(out: str, name: str) -> tuple[str, str]:
    """(header, the row of container ``name``) of a ``ps`` table."""
    lines = out.splitlines()
    rows = [ln for ln in lines[1:] if f"   {name}   " in ln]
    assert len(rows) == 1, out
    return lines[0], rows[0]


def test_allowed_td_shows_backend_measurement_verdict_and_broker(world) -> None:  # type: ignore[no-untyped-def]
    env = world["env"]
    res = arca(env, "run", "-d", "--name", LONG, "--tee", "sim", "--init-data", world["init"],
               world["image"])
    assert res.returncode == 0, res.stderr
    deadline = time.monotonic() + 30
    while SECRET.decode() not in (logs := arca(env, "logs", LONG).stdout) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert SECRET.decode() in logs, logs  # the workload got its secret
    info = json.loads(arca(env, "inspect", LONG).stdout)["td"]
    assert info["backend"] == "sim" and len(info["measurement"]) == 96
    assert info["broker"] == world["kbs"]
    assert info["attestation"] == {"verdict": "allowed", "detail": "", "reported_by": "td"}
    out = arca(env, "ps").stdout
    head, row = ps_row(out, LONG)
    assert LONG in row  # never cut
    col = head.index("ATTESTATION")
    assert row[col:].startswith(f"allowed by {world['kbs']}")
    assert row[head.index("TD (MEASUREMENT)"):].startswith(f"sim {info['measurement'][:12]}…")
    fmt = arca(env, "ps", "--format", "{{.Names}} {{.TEE}} {{.Verdict}} {{.Broker}}").stdout
    assert f"{LONG} sim allowed {world['kbs']}" in fmt.splitlines()
    # the JSON forms carry the same TD object as inspect: podman's keys (--format json) and
    # Arca's record (--json)
    (pod,) = json.loads(arca(env, "ps", "--format", "json").stdout)
    assert pod["Names"] == [LONG] and pod["State"] == "running" and pod["TEE"] == "sim"
    assert pod["Status"].startswith("Up ") and isinstance(pod["Created"], int)
    assert pod["td"] == info
    (rec,) = json.loads(arca(env, "ps", "--json").stdout)
    assert rec["name"] == LONG and rec["td"] == info
    assert arca(env, "rm", "-f", LONG).returncode == 0


def test_refused_td_names_its_measurement_and_the_reason(world) -> None:  # type: ignore[no-untyped-def]
    """Another command is another measurement: not among the reference values, refused
    before the workload runs; the 403's detail reaches `arca run`'s output and `ps`."""
    env = world["env"]
    res = arca(env, "run", "--name", "refused-td", "--tee", "sim", "--init-data",
               world["init"], world["image"], "sh", "-c", "cat /run/arca/secrets/key")
    assert res.returncode != 0 and SECRET.decode() not in res.stdout, res
    assert "Traceback" not in res.stderr
    line = next(ln for ln in res.stderr.splitlines() if ln.startswith("arca-agent: error:"))
    assert "403 PolicyDeny: resource policy denies default/app/key:" in line, line
    assert "ear.status contraindicated" in line or "ear.status warning" in line, line
    assert "executables 33 (warning)" in line, line
    # the refused measurement, by prefix: the TD's own (what the runtime registered)
    info = json.loads(arca(env, "inspect", "refused-td").stdout)["td"]
    measurement = info["measurement"]
    assert len(measurement) == 96
    assert (f"no release:default:app:key grant for this sim TD's measurement "
            f"{measurement[:16]}…") in line
    # nothing of the policy's accepted values leaks into the answer
    values = json.loads((pathlib.Path(world["init"]).parent / "p/reference-values.json")
                        .read_text())
    for accepted in (v for vs in values.values() for v in vs):
        assert accepted[:16] not in line
    assert info["attestation"]["verdict"] == "refused"
    assert "403 PolicyDeny" in info["attestation"]["detail"]
    head, row = ps_row(arca(env, "ps", "-a").stdout, "refused-td")
    assert row[head.index("ATTESTATION"):].startswith(f"refused by {world['kbs']}")
    assert arca(env, "rm", "-f", "refused-td").returncode == 0


def test_td_without_broker_and_plain_container(world) -> None:  # type: ignore[no-untyped-def]
    env = world["env"]
    for name, tee in (("nobroker", "sim"), ("plain", "none")):
        res = arca(env, "run", "--name", name, "--tee", tee, world["image"], "true")
        assert res.returncode == 0, res.stderr
    out = arca(env, "ps", "-a").stdout
    head, row = ps_row(out, "nobroker")
    assert row[head.index("ATTESTATION"):].startswith("no broker")
    head, row = ps_row(out, "plain")
    assert row[head.index("ATTESTATION"):head.index("CREATED")].strip() == ""
    assert json.loads(arca(env, "inspect", "plain").stdout)["td"] is None
    by_name = {c["Names"][0]: c for c in json.loads(arca(env, "ps", "-a", "--format",
                                                         "json").stdout)}
    assert by_name["plain"]["td"] is None and by_name["plain"]["Exited"] is True
    assert by_name["plain"]["State"] == "exited" and by_name["plain"]["ExitCode"] == 0
    assert by_name["plain"]["Status"].startswith("Exited (0) ")
    assert by_name["nobroker"]["td"]["attestation"]["verdict"] == "no broker"
    assert len(by_name["nobroker"]["td"]["measurement"]) == 96
    for name in ("nobroker", "plain"):
        assert arca(env, "rm", "-f", name).returncode == 0
