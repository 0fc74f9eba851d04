"""Which hardware verifiers a KBS enables (issue 13, item 8), and the policy's second line:
hardware claims without a collateral-checked TCB status are never affirming."""

from __future__ import annotations

import logging
import pathlib

import pytest

from arca.errors import CollateralError, ConfigError, UntrustedRoot
from arca.kbs import config as kbs_config
from arca.kbs.collateral import DCAP_ITEMS, hardware_verifiers
from arca.kbs.config import KbsConfig
from arca.kbs.policy import PolicyEngine, default_policy, ear_status
from tests.support.dcap_factory import DcapFactory

ENGINE = PolicyEngine()


@pytest.mark.parametrize("tee", ["tdx", "sgx", "snp"])
def test_hardware_claims_without_tcb_status_are_not_affirming(tee: str) -> None:
    """What the attack exploited: a verifier without collateral reports no TCB status, and
    the default policy counted that as up to date."""
    data = {"reference": {f"{tee}.m": ["x"]}, "config": {"allow_sim": False,
                                                          "allow_sample": False}}
    vector = ENGINE.trust_vector(default_policy("attestation"), data, {
        "tee": tee, "claims": {"m": "x", "debug": False, "tcb_status": None},
        "init_data": None})
    assert vector["hardware"] == 32 and ear_status(vector) == "warning"


def _cfg(tmp_path: pathlib.Path, **kw: object) -> KbsConfig:
    return KbsConfig(data_dir=str(tmp_path / "data"), insecure_http=True, **kw)  # type: ignore[arg-type]


def test_nothing_configured_enables_no_hardware_tee(tmp_path: pathlib.Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "arca.kbs"):
        verifiers, decisions = hardware_verifiers(_cfg(tmp_path))
    assert verifiers == {} and [d.enabled for d in decisions] == [False] * 3
    assert caplog.text.count("evidence NOT accepted") == 3


def test_a_complete_directory_enables_dcap_with_revocation_required(
        tmp_path: pathlib.Path) -> None:
    bundle = DcapFactory().build(tee="tdx")
    coll = tmp_path / "c"
    coll.mkdir()
    for name, data in bundle.collateral.items():
        (coll / name).write_bytes(data)
    assert set(DCAP_ITEMS) <= set(bundle.collateral)
    verifiers, _ = hardware_verifiers(_cfg(tmp_path, collateral=str(coll)))
    assert set(verifiers) == {"sgx", "tdx"}  # snp: no minimum TCB
    tdx = verifiers["tdx"]
    assert getattr(tdx, "require_revocation", None) is True
    # the pinned root is Intel's: the factory's quote is refused even with its collateral
    with pytest.raises(UntrustedRoot):
        tdx.verify(bundle.quote, at=bundle.at)


def test_dcap_require_revocation_refuses_missing_crls() -> None:
    from arca.verifier.collateral import MemoryCollateral
    from arca.verifier.dcap import TdxVerifier

    bundle = DcapFactory().build(tee="tdx")
    for missing in ("pck_crl.der", "root_ca_crl.der"):
        items = {k: v for k, v in bundle.collateral.items() if k != missing}
        relaxed = TdxVerifier(MemoryCollateral(items),
                              trusted_root_spki_sha256=[bundle.root_fp])
        assert relaxed.verify(bundle.quote, at=bundle.at).tcb_status == "UpToDate"
        strict = TdxVerifier(MemoryCollateral(items), trusted_root_spki_sha256=[bundle.root_fp],
                             require_revocation=True)
        with pytest.raises(CollateralError, match=missing):
            strict.verify(bundle.quote, at=bundle.at)


def test_online_sources_enable_everything_and_insecure_roots_warn(
        tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    from tests.support.snp_factory import make_pki

    (tmp_path / "ark.pem").write_bytes(make_pki("Milan").ark_pem)
    (tmp_path / "root.pem").write_bytes(_root_pem())
    with caplog.at_level(logging.INFO, "arca.kbs"):
        verifiers, _ = hardware_verifiers(_cfg(
            tmp_path, collateral_online=True, snp_min_tcb=["Milan:bootloader=1,tee=0,snp=1,"
                                                           "microcode=1"],
            insecure_dcap_root=(str(tmp_path / "root.pem"),),
            insecure_amd_ark=(str(tmp_path / "ark.pem"),)))
    assert set(verifiers) == {"sgx", "tdx", "snp"}
    assert "--insecure-dcap-root" in caplog.text and "--insecure-amd-ark" in caplog.text
    assert "api.trustedservices.intel.com" in caplog.text and "kdsintf.amd.com" in caplog.text


def _root_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization

    from tests.support.dcap_factory import make_cert

    f = DcapFactory()
    cert = make_cert("Test SGX Root CA", f.root_key, "Test SGX Root CA", f.root_key, 1, ca=True)
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("kw,match", [
    ({"snp_min_tcb": ["Milan:snp=1"], "collateral_online": True}, "needs exactly"),
    ({"insecure_amd_ark": ("/nonexistent.pem",)}, "insecure-amd-ark"),
])
def test_bad_settings_fail_at_start_up(tmp_path: pathlib.Path, kw: dict[str, object],
                                       match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        hardware_verifiers(_cfg(tmp_path, **kw))


def test_config_file_and_json_round_trip_the_new_settings(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "kbs.toml"
    f.write_text('data_dir = "/d"\ncollateral_online = true\ninsecure_dcap_root = "/r.pem"\n'
                 'snp_min_tcb = {Milan = {bootloader = 1, tee = 0, snp = 2, microcode = 3}}\n')
    cfg = kbs_config.load(str(f), {"kds_url": "http://127.0.0.1:1"})
    assert cfg.insecure_dcap_root == ("/r.pem",) and cfg.kds_url == "http://127.0.0.1:1"
    assert KbsConfig.from_json(cfg.to_json()) == cfg


def test_collateral_urls_must_be_http(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="pcs-url"):
        _cfg(tmp_path, pcs_url="file:///etc/passwd").check()
    _cfg(tmp_path, kds_url="https://kds.example").check()
