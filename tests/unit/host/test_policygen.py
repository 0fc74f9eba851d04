"""``arca policy generate``: grant names and values, measurements under an execution policy,
and the generated Rego policy run through the KBS's real engine (regopy) with claims produced
by the real sim verifier and the KBS's default attestation policy."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.host.policygen import (
    RESOURCE_POLICY,
    from_descriptor,
    grant_name,
    init_data_hash_hex,
    measurements,
)
from arca.host.runtime.execpolicy import measured_process, policy_of
from arca.host.simtee.platform import init_data_hash
from arca.kbs.policy import PolicyEngine, check_policy, default_policy, ear_status
from arca.kbs.service import resource_path
from arca.verifier.base import Expected
from arca.verifier.sim import SimVerifier
from arca.wire.descriptor import LaunchDescriptor, ProcessSpec
from arca.wire.errors import ConfigError, InvalidInput
from tests.support.kbs import SimAuthority

IMAGE_PROCESS = ProcessSpec(("/bin/app", "--serve"), "/srv", 1000, 1000,
                            ("GREETING=hello", "PATH=/bin"))
DESCRIPTOR = LaunchDescriptor("sim", "sha256:" + "1" * 64, "sha256:" + "2" * 64, IMAGE_PROCESS)

INIT_DATA = b'''version = "0.1.0"
algorithm = "sha384"
[data]
kbs_url = "http://127.0.0.1:1"
resources = """
[[resource]]
path = "default/key/app"
name = "app.key"
"""
policy = """
allow_args = [["sh", "-c", "cat /run/arca/secrets/*"], ["/bin/app", "--debug", "..."]]
allow_env = ["LOG_*"]
"""
'''


def test_grant_name_maps_resource_paths():
    assert grant_name("default/key/app") == "release:default:key:app"
    assert grant_name("a.b/c-d/e_f") == "release:a.b:c-d:e_f"


@pytest.mark.parametrize("bad", ["default/key", "a/b/c/d", "../key/app", "a/../b", "a/b/.",
                                 "a/b/c%2f", "a//b", "a/b/" + "x" * 130, "a/b/c d"])
def test_grant_name_refuses_what_the_kbs_would_refuse(bad: str):
    with pytest.raises(InvalidInput, match="resource path"):
        grant_name(bad)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab./-_%:\0 é", max_size=40))
def test_grant_name_fuzz_only_accepts_kbs_resource_paths(path: str):
    try:
        name = grant_name(path)
    except InvalidInput:
        return
    assert resource_path(path) == path  # the KBS serves it under the same path
    assert name == "release:" + path.replace("/", ":")


def test_without_init_data_the_grant_pins_the_all_zero_hash():
    gen = from_descriptor("img", "sha256:x", DESCRIPTOR, None, ["default/key/app"])
    assert gen.measurements == (DESCRIPTOR.measurement().hex(),)
    assert gen.reference_values() == {
        "release:default:key:app": [f"sim/{DESCRIPTOR.measurement().hex()}/{'00' * 48}"]}


def test_init_data_resources_are_the_default_and_its_hash_is_pinned():
    gen = from_descriptor("img", "sha256:x", DESCRIPTOR, INIT_DATA, [])
    assert gen.resources == ("default/key/app",)
    assert gen.init_data_hash == hashlib.sha384(INIT_DATA).hexdigest()
    assert init_data_hash_hex(INIT_DATA) == init_data_hash(INIT_DATA).hex()
    with pytest.raises(InvalidInput, match="no resources"):
        from_descriptor("img", "sha256:x", DESCRIPTOR, None, [])
    with pytest.raises(ConfigError, match="not supported"):
        from_descriptor("img", "x", LaunchDescriptor("tdx", "a", "b", IMAGE_PROCESS), None,
                        ["a/b/c"])


def test_measurements_match_what_the_runtime_measures_for_allowed_commands():
    """For every host command the policy allows, the runtime's measured process (execpolicy)
    gives a measurement in the generated list; a command it does not allow does not."""
    policy = policy_of(INIT_DATA)
    listed = measurements(DESCRIPTOR, INIT_DATA)
    assert len(listed) == 3 and listed[0] == DESCRIPTOR.measurement().hex()

    def runtime_measurement(args: tuple[str, ...], env: tuple[str, ...]) -> str:
        host = ProcessSpec(args, IMAGE_PROCESS.cwd, IMAGE_PROCESS.uid, IMAGE_PROCESS.gid, env)
        spec = measured_process(host, policy)
        return LaunchDescriptor("sim", DESCRIPTOR.guest_runtime_digest,
                                DESCRIPTOR.rootfs_digest, spec).measurement().hex()

    env = IMAGE_PROCESS.env
    assert runtime_measurement(IMAGE_PROCESS.args, env) == listed[0]
    assert runtime_measurement(("sh", "-c", "cat /run/arca/secrets/*"), env) == listed[1]
    assert runtime_measurement(("/bin/app", "--debug", "-v", "x"), env) == listed[2]
    # an allowed variable does not change the measurement; any other one does
    assert runtime_measurement(IMAGE_PROCESS.args, (*env, "LOG_LEVEL=debug")) == listed[0]
    assert runtime_measurement(IMAGE_PROCESS.args, (*env, "FOO=1")) not in listed
    assert runtime_measurement(("sh", "-c", "cat /etc/passwd"), env) not in listed


def test_measured_process_without_policy_is_unchanged():
    assert measured_process(IMAGE_PROCESS, policy_of(None)) is IMAGE_PROCESS


# -- the generated policy in the KBS's Rego engine -------------------------------------------

AUTHORITY = SimAuthority()
VERIFIER = SimVerifier([AUTHORITY.root_pem])
ENGINE = PolicyEngine()


def token_claims(measurement_hex: str, init_data: bytes | None, *, debug: bool = False,
                 allow_sim: bool = True, reference: dict[str, list[str]]) -> dict[str, object]:
    """The claims the KBS puts in its EAR token for this TD (arca.kbs.service._appraise)."""
    report_data = os.urandom(64)
    idh = bytes.fromhex(init_data_hash_hex(init_data))
    evidence = AUTHORITY.evidence(report_data, measurement=bytes.fromhex(measurement_hex),
                                  init_data_hash=idh, debug=debug)
    claims = VERIFIER.verify(evidence, expected=Expected(report_data, idh)).to_dict()
    data = {"reference": reference, "config": {"allow_sim": allow_sim, "allow_sample": False}}
    vector = ENGINE.trust_vector(default_policy("attestation"), data,
                                 {"tee": "sim", "claims": claims, "init_data": None})
    return {"submods": {"cpu0": {"ear.status": ear_status(vector),
                                 "ear.trustworthiness-vector": vector,
                                 "ear.veraison.annotated-evidence": claims}}}


def allowed(path: str, claims: dict[str, object], reference: dict[str, list[str]],
            allow_sim: bool = True) -> bool:
    data = {"reference": reference, "config": {"allow_sim": allow_sim, "allow_sample": False}}
    return ENGINE.allow(RESOURCE_POLICY, data, {**claims, "resource-path": path})


def test_generated_policy_is_valid_rego_for_the_kbs():
    check_policy(RESOURCE_POLICY)


def test_policy_releases_exactly_the_listed_resources_to_the_measured_image():
    gen = from_descriptor("img", "sha256:x", DESCRIPTOR, INIT_DATA, ["default/key/app"])
    other = from_descriptor("other", "sha256:y",
                            LaunchDescriptor("sim", "a", "b", ProcessSpec(("/other",))),
                            INIT_DATA, ["default/key/other"])
    ref = {**gen.reference_values(), **other.reference_values()}
    good = token_claims(gen.measurements[0], INIT_DATA, reference=ref)
    assert allowed("default/key/app", good, ref)
    for m in gen.measurements:  # every allowed command of this image
        assert allowed("default/key/app", token_claims(m, INIT_DATA, reference=ref), ref)
    # not another resource, not to another image, not with other init-data, not in debug
    assert not allowed("default/key/other", good, ref)
    assert not allowed("default/key/unlisted", good, ref)
    assert not allowed("default/key/app", token_claims(other.measurements[0], INIT_DATA,
                                                       reference=ref), ref)
    assert allowed("default/key/other", token_claims(other.measurements[0], INIT_DATA,
                                                     reference=ref), ref)
    changed = INIT_DATA.replace(b"algorithm", b"# changed\nalgorithm")
    assert not allowed("default/key/app", token_claims(gen.measurements[0], changed,
                                                       reference=ref), ref)
    assert not allowed("default/key/app", token_claims(gen.measurements[0], None,
                                                       reference=ref), ref)
    assert not allowed("default/key/app", token_claims(gen.measurements[0], INIT_DATA,
                                                       debug=True, reference=ref), ref)
    one_byte = "00" + gen.measurements[0][2:]
    assert not allowed("default/key/app", token_claims(one_byte, INIT_DATA, reference=ref), ref)


def test_policy_denies_when_the_kbs_does_not_accept_sim_or_has_no_grants():
    gen = from_descriptor("img", "sha256:x", DESCRIPTOR, INIT_DATA, [])
    ref = gen.reference_values()
    claims = token_claims(gen.measurements[0], INIT_DATA, allow_sim=False, reference=ref)
    assert not allowed("default/key/app", claims, ref, allow_sim=False)
    good = token_claims(gen.measurements[0], INIT_DATA, reference=ref)
    assert not allowed("default/key/app", good, {})
    assert not allowed("default/key/app", good, {"release:default:key:app": []})


def test_written_files_and_admin_commands(tmp_path):
    gen = from_descriptor("img", "sha256:x", DESCRIPTOR, INIT_DATA, [])
    policy, values = gen.write(tmp_path / "out")
    assert policy.read_text() == RESOURCE_POLICY
    assert json.loads(values.read_text()) == gen.reference_values()
    cmds = gen.admin_commands(tmp_path / "out")
    assert cmds[0].endswith(f"set-resource-policy --file {policy}")
    assert cmds[1].endswith("set-reference-value release:default:key:app "
                            + " ".join(gen.grants))


# -- the CLI: user errors are one line, no traceback ------------------------------------------


@pytest.mark.parametrize(("args", "message", "code"), [
    (["--resource", "default/../app"], "is not repo/type/tag", 125),
    (["--resource", "a/b/c", "--init-data", "/nonexistent/init.toml"],
     "cannot read init-data /nonexistent/init.toml", 125),
    ([], "no resources to grant", 125),
])
def test_cli_user_errors(args: list[str], message: str, code: int, capsys, tmp_path,
                         monkeypatch: pytest.MonkeyPatch):
    from arca.cli.main import main

    monkeypatch.setenv("ARCA_ROOT", str(tmp_path / "root"))
    with pytest.raises(SystemExit) as e:
        main(["policy", "generate", "oci:/nonexistent", "--out-dir", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert e.value.code == code and message in err and "Traceback" not in err, err
    assert not (tmp_path / "resource-policy.rego").exists()


def test_cli_refuses_bad_init_data_before_touching_the_image(capsys, tmp_path):
    from arca.cli.main import main

    bad = tmp_path / "init.toml"
    bad.write_text('version = "0.1.0"\n[data]\nsurprise = "x"\n')
    with pytest.raises(SystemExit) as e:
        main(["policy", "generate", "oci:/nonexistent", "--init-data", str(bad),
              "--resource", "a/b/c", "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 125 and "unknown key(s) surprise" in err, err


def test_merge_keeps_existing_grants_of_the_listed_resources_only():
    gen = from_descriptor("img", "sha256:x", DESCRIPTOR, None, ["default/key/app"])
    current = {"release:default:key:app": ["sim/old/zero", gen.grants[0]],
               "release:default:key:unrelated": ["sim/x/y"], "sim.measurement": ["aa"]}
    merged = gen.merge(current)
    assert merged.reference_values() == {
        "release:default:key:app": ["sim/old/zero", gen.grants[0]]}
    assert gen.merge({}).reference_values() == gen.reference_values()
    with pytest.raises(InvalidInput, match="list of strings"):
        gen.merge({"release:default:key:app": "sim/x/y"})
    with pytest.raises(InvalidInput, match="JSON object"):
        gen.merge([])  # type: ignore[arg-type]
