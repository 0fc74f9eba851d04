"""Every DCAP check fails for exactly its reason: one defect per built quote (test PKI)."""

from __future__ import annotations

import datetime as dt

import pytest

from arca.errors import (
    BindingMismatch,
    ChainInvalid,
    CollateralError,
    Expired,
    MalformedEvidence,
    Revoked,
    SignatureInvalid,
    TcbError,
    UntrustedRoot,
)
from arca.verifier.base import Expected
from arca.verifier.collateral import MemoryCollateral
from arca.verifier.dcap import SgxVerifier, TdxVerifier
from tests.support.dcap_factory import (
    AT,
    PCE_SVN,
    PCK_TCB,
    TEE_TCB_SVN,
    DcapFactory,
    isv_level,
    tcb_level,
)

DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def factory() -> DcapFactory:
    return DcapFactory()


FORMATS = [
    pytest.param({"tee": "sgx"}, id="sgx-v3"),
    pytest.param({"tee": "tdx"}, id="tdx-v4"),
    pytest.param({"tee": "tdx", "td15": True}, id="tdx-v5-td15"),
    pytest.param({"tee": "tdx", "version": 5}, id="tdx-v5-td10"),
    pytest.param({"tee": "sgx", "version": 4}, id="sgx-v4"),
    pytest.param({"tee": "sgx", "version": 5}, id="sgx-v5"),
]


@pytest.mark.parametrize("fmt", FORMATS)
def test_good_quote_verifies(factory: DcapFactory, fmt: dict) -> None:
    b = factory.build(**fmt, report_data=b"\x07" * 64)
    claims = b.verifier().verify(b.quote, at=b.at, expected=Expected(report_data=b"\x07" * 64))
    assert claims.tcb_status == "UpToDate"
    assert claims.values["report_data"] == "07" * 64
    assert claims.debug is False
    assert claims.to_dict()["tee"] == fmt["tee"]


# (defect name, build kwargs, error class, message prefix)
DEFECTS = [
    ("quote_signature", {"breaks": {"quote_signature"}}, SignatureInvalid, "quote_signature:"),
    ("qe_report_signature", {"breaks": {"qe_report_signature"}}, SignatureInvalid,
     "qe_report_signature:"),
    ("qe_report_data", {"breaks": {"qe_report_data"}}, BindingMismatch, "qe_report_data:"),
    ("attestation_key_swapped", {"breaks": {"attestation_key"}}, BindingMismatch,
     "qe_report_data:"),
    ("pck_link", {"breaks": {"pck_signed_by_other"}}, ChainInvalid,
     "pck_chain: certificate 0"),
    ("ca_link", {"breaks": {"ca_signed_by_other"}}, ChainInvalid, "pck_chain: certificate 1"),
    ("root_link", {"breaks": {"root_not_self_signed"}}, ChainInvalid,
     "pck_chain: root certificate"),
    ("tcb_info_signature", {"breaks": {"tcb_info_signature"}}, SignatureInvalid, "tcb_info:"),
    ("qe_identity_signature", {"breaks": {"qe_identity_signature"}}, SignatureInvalid,
     "qe_identity:"),
    ("tcb_signing_link", {"breaks": {"tcb_signing_by_other"}}, ChainInvalid,
     "tcb_info_issuer_chain: certificate 0"),
    ("pck_expired", {"pck_not_after": AT - DAY}, Expired, "pck_chain: certificate 0"),
    ("tcb_info_expired", {"tcb_next_update": AT - DAY}, Expired, "tcb_info:"),
    ("qe_identity_expired", {"qe_next_update": AT - DAY}, Expired, "qe_identity:"),
    ("crl_expired", {"crl_next_update": AT - DAY}, Expired, "root_ca_crl:"),
    ("pck_revoked", {"revoke": ("pck",)}, Revoked, "pck_certificate:"),
    ("ca_revoked", {"revoke": ("ca",)}, Revoked, "pck_chain:"),
    ("tcb_signing_revoked", {"revoke": ("signing",)}, Revoked, "tcb_signing_chain:"),
    ("tcb_info_other_fmspc", {"tcb_info_fmspc": bytes.fromhex("112233445566")},
     CollateralError, "tcb_info: FMSPC"),
    ("qe_not_intel", {"qe_mrsigner": b"\x99" * 32}, TcbError, "qe_identity: QE report"),
]


@pytest.mark.parametrize("fmt", FORMATS[:2])
@pytest.mark.parametrize(("name", "kwargs", "error", "prefix"), DEFECTS,
                         ids=[d[0] for d in DEFECTS])
def test_each_defect_fails_for_its_reason(factory: DcapFactory, fmt: dict, name: str,
                                          kwargs: dict, error: type, prefix: str) -> None:
    b = factory.build(**fmt, **kwargs)
    with pytest.raises(error) as info:
        b.verifier().verify(b.quote, at=b.at)
    assert type(info.value) is error
    assert str(info.value).startswith(prefix), str(info.value)
    assert info.value.fields["tee"] == fmt["tee"] or error is CollateralError


def test_untrusted_root(factory: DcapFactory) -> None:
    b = factory.build()
    with pytest.raises(UntrustedRoot, match="^pck_chain: root"):
        b.verifier(pin=b"\x01" * 32).verify(b.quote, at=b.at)


def test_intel_pin_rejects_test_root(factory: DcapFactory) -> None:
    b = factory.build()
    with pytest.raises(UntrustedRoot):
        TdxVerifier(None).verify(b.quote, at=b.at)


def test_not_yet_valid(factory: DcapFactory) -> None:
    b = factory.build()
    with pytest.raises(Expired, match="not valid before"):
        b.verifier(collateral=False).verify(b.quote, at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))


def test_tdx_module_signer_mismatch(factory: DcapFactory) -> None:
    b = factory.build(mrsigner_seam=b"\x01" * 48)
    with pytest.raises(TcbError, match="^tdx_module:"):
        b.verifier().verify(b.quote, at=b.at)


def test_tcb_info_of_other_tee(factory: DcapFactory) -> None:
    b = factory.build(tee="tdx", tcb_info_id="SGX")
    with pytest.raises(CollateralError, match="^tcb_info: id SGX"):
        b.verifier().verify(b.quote, at=b.at)


def test_qe_identity_of_other_tee(factory: DcapFactory) -> None:
    sgx, tdx = factory.build(tee="sgx"), factory.build(tee="tdx")
    sgx.collateral["qe_identity.json"] = tdx.collateral["qe_identity.json"]
    with pytest.raises(CollateralError, match="^qe_identity: id TD_QE"):
        sgx.verifier().verify(sgx.quote, at=sgx.at)


def test_missing_collateral_item(factory: DcapFactory) -> None:
    b = factory.build()
    del b.collateral["tcb_info.json"]
    with pytest.raises(CollateralError, match="^tcb_info.json: missing"):
        b.verifier().verify(b.quote, at=b.at)


def test_crls_are_optional(factory: DcapFactory) -> None:
    b = factory.build()
    for name in ("pck_crl.der", "root_ca_crl.der"):
        del b.collateral[name]
    assert b.verifier().verify(b.quote, at=b.at).tcb_status == "UpToDate"


def test_wrong_tee_verifier(factory: DcapFactory) -> None:
    b = factory.build(tee="sgx")
    with pytest.raises(MalformedEvidence, match="^header.tee_type:"):
        TdxVerifier(None, trusted_root_spki_sha256=[b.root_fp]).verify(b.quote, at=b.at)
    b = factory.build(tee="tdx")
    with pytest.raises(MalformedEvidence, match="^header.tee_type:"):
        SgxVerifier(None, trusted_root_spki_sha256=[b.root_fp]).verify(b.quote, at=b.at)


# --- caller bindings ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS[:2])
def test_report_data_binding(factory: DcapFactory, fmt: dict) -> None:
    rd = bytes(range(48)) + bytes(16)
    b = factory.build(**fmt, report_data=rd)
    v = b.verifier()
    v.verify(b.quote, at=b.at, expected=Expected(report_data=rd))
    v.verify(b.quote, at=b.at, expected=Expected(report_data=rd[:48]))  # zero padding rule
    with pytest.raises(BindingMismatch, match="^report_data:") as info:
        v.verify(b.quote, at=b.at, expected=Expected(report_data=rd[:47] + b"\x01"))
    assert info.value.fields["authentic"] is True
    assert info.value.fields["claims"]["report_data"] == rd.hex()
    with pytest.raises(BindingMismatch, match="^report_data:"):  # padding must be zero
        v.verify(b.quote, at=b.at, expected=Expected(report_data=rd[:40]))
    with pytest.raises(ValueError):
        v.verify(b.quote, at=b.at, expected=Expected(report_data=rd + b"\x00"))


@pytest.mark.parametrize("fmt", FORMATS[:2])
def test_init_data_binding(factory: DcapFactory, fmt: dict) -> None:
    size = 64 if fmt["tee"] == "sgx" else 48
    digest = bytes(range(1, 33))
    b = factory.build(**fmt, init_data=digest + bytes(size - 32))
    v = b.verifier()
    claims = v.verify(b.quote, at=b.at, expected=Expected(init_data_hash=digest))
    assert claims.values["init_data"] == (digest + bytes(size - 32)).hex()
    with pytest.raises(BindingMismatch, match="^init_data:"):
        v.verify(b.quote, at=b.at, expected=Expected(init_data_hash=bytes(32)))


@pytest.mark.parametrize("fmt", FORMATS[:2])
def test_debug_is_flagged(factory: DcapFactory, fmt: dict) -> None:
    b = factory.build(**fmt, debug=True)
    claims = b.verifier().verify(b.quote, at=b.at)
    assert claims.debug is True and claims.to_dict()["debug"] is True


def test_naive_time_is_a_caller_error(factory: DcapFactory) -> None:
    b = factory.build()
    with pytest.raises(ValueError):
        b.verifier().verify(b.quote, at=dt.datetime(2025, 6, 1))


# --- TCB status -------------------------------------------------------------------------------

PLATFORM_STATUSES = ["UpToDate", "SWHardeningNeeded", "ConfigurationNeeded",
                     "ConfigurationAndSWHardeningNeeded", "OutOfDate",
                     "OutOfDateConfigurationNeeded"]


@pytest.mark.parametrize("tee", ["sgx", "tdx"])
@pytest.mark.parametrize("status", PLATFORM_STATUSES)
def test_each_platform_status_is_reported(factory: DcapFactory, tee: str, status: str) -> None:
    tdx = TEE_TCB_SVN if tee == "tdx" else None
    b = factory.build(tee=tee, tcb_levels=[tcb_level(status, tdx=tdx, advisories=("SA-1",))],
                      qe_levels=[isv_level(4, "UpToDate", ("SA-2",))])
    claims = b.verifier().verify(b.quote, at=b.at)
    assert claims.tcb_status == status
    assert claims.advisory_ids == ("SA-1", "SA-2")


@pytest.mark.parametrize("tee", ["sgx", "tdx"])
def test_revoked_level_rejects(factory: DcapFactory, tee: str) -> None:
    tdx = TEE_TCB_SVN if tee == "tdx" else None
    b = factory.build(tee=tee, tcb_levels=[tcb_level("Revoked", tdx=tdx)])
    with pytest.raises(Revoked, match="^tcb_status:") as info:
        b.verifier().verify(b.quote, at=b.at)
    assert info.value.fields["tcb_status"] == "Revoked"


@pytest.mark.parametrize("tee", ["sgx", "tdx"])
def test_platform_below_every_level_is_not_supported(factory: DcapFactory, tee: str) -> None:
    tdx = TEE_TCB_SVN if tee == "tdx" else None
    higher = tuple(v + 1 for v in PCK_TCB)
    b = factory.build(tee=tee, tcb_levels=[tcb_level("UpToDate", sgx=higher, tdx=tdx),
                                           tcb_level("OutOfDate", pcesvn=PCE_SVN + 1, tdx=tdx)])
    with pytest.raises(TcbError, match="^tcb_status: TcbNotSupported") as info:
        b.verifier().verify(b.quote, at=b.at)
    assert info.value.fields["tcb_status"] == "TcbNotSupported"
    assert info.value.fields["authentic"] is True


@pytest.mark.parametrize("status", ["UpToDate", "SWHardeningNeeded", "OutOfDate"])
def test_sgx_tcb_info_v2(factory: DcapFactory, status: str) -> None:
    b = factory.build(tee="sgx", tcb_info_version=2, tcb_levels=[tcb_level(status, tdx=None)])
    assert b.verifier().verify(b.quote, at=b.at).tcb_status == status


def test_levels_are_visited_in_intel_order(factory: DcapFactory) -> None:
    # Document order lists the lower level first; Intel's order must still pick the higher one.
    lower = tuple(max(v - 1, 0) for v in PCK_TCB)
    b = factory.build(tee="sgx", tcb_levels=[tcb_level("OutOfDate", sgx=lower, tdx=None),
                                             tcb_level("UpToDate", tdx=None)])
    assert b.verifier().verify(b.quote, at=b.at).tcb_status == "UpToDate"


def test_tdx_components_select_the_level(factory: DcapFactory) -> None:
    higher = bytes([TEE_TCB_SVN[0], TEE_TCB_SVN[1], TEE_TCB_SVN[2] + 1]) + TEE_TCB_SVN[3:]
    b = factory.build(tcb_levels=[tcb_level("UpToDate", tdx=higher),
                                  tcb_level("OutOfDate", tdx=TEE_TCB_SVN)])
    assert b.verifier().verify(b.quote, at=b.at).tcb_status == "OutOfDate"


def test_module_bytes_are_judged_by_module_identity(factory: DcapFactory) -> None:
    # TEE_TCB_SVN[1] != 0: bytes 0-1 of the level are skipped, the module identity decides.
    level_svn = bytes([TEE_TCB_SVN[0] + 5]) + TEE_TCB_SVN[1:]
    b = factory.build(tcb_levels=[tcb_level("UpToDate", tdx=level_svn)],
                      module_levels=[isv_level(TEE_TCB_SVN[0] + 1, "UpToDate"),
                                     isv_level(0, "OutOfDate")])
    assert b.verifier().verify(b.quote, at=b.at).tcb_status == "OutOfDate"


@pytest.mark.parametrize(("platform", "module", "result"), [
    ("UpToDate", "OutOfDate", "OutOfDate"),
    ("SWHardeningNeeded", "OutOfDate", "OutOfDate"),
    ("ConfigurationNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"),
    ("ConfigurationAndSWHardeningNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"),
    ("ConfigurationNeeded", "UpToDate", "ConfigurationNeeded"),
])
def test_module_status_converges(factory: DcapFactory, platform: str, module: str,
                                 result: str) -> None:
    b = factory.build(tcb_levels=[tcb_level(platform)],
                      module_levels=[isv_level(TEE_TCB_SVN[0], module)])
    assert b.verifier().verify(b.quote, at=b.at).tcb_status == result


def test_module_revoked_rejects(factory: DcapFactory) -> None:
    b = factory.build(module_levels=[isv_level(TEE_TCB_SVN[0], "Revoked")])
    with pytest.raises(Revoked, match="^tcb_status:"):
        b.verifier().verify(b.quote, at=b.at)


def test_unknown_module_version_is_not_supported(factory: DcapFactory) -> None:
    svn = bytes([3, 2]) + TEE_TCB_SVN[2:]  # module major 2: no TDX_02 identity
    b = factory.build(tee_tcb_svn=svn, tcb_levels=[tcb_level("UpToDate", tdx=svn)])
    with pytest.raises(TcbError, match="TDX_02"):
        b.verifier().verify(b.quote, at=b.at)


@pytest.mark.parametrize("tee", ["sgx", "tdx"])
def test_qe_status_converges(factory: DcapFactory, tee: str) -> None:
    b = factory.build(tee=tee, qe_svn=4, qe_levels=[isv_level(6, "UpToDate"),
                                                   isv_level(2, "OutOfDate")])
    assert b.verifier().verify(b.quote, at=b.at).tcb_status == "OutOfDate"
    b = factory.build(tee=tee, qe_svn=1, qe_levels=[isv_level(2, "UpToDate")])
    with pytest.raises(TcbError, match="QE ISVSVN 1"):
        b.verifier().verify(b.quote, at=b.at)


RELAUNCH_SVN = TEE_TCB_SVN                      # running TD: module SVN 3, component 2
UPDATED_SVN = bytes([5, 1, 4]) + bytes(13)      # platform now: module SVN 5, component 4


@pytest.mark.parametrize(("td15", "svn2", "platform", "result"), [
    (True, UPDATED_SVN, "UpToDate", "TDRelaunchAdvised"),
    (True, UPDATED_SVN, "ConfigurationNeeded", "TDRelaunchAdvisedConfigurationNeeded"),
    (True, RELAUNCH_SVN, "UpToDate", "OutOfDate"),      # platform not updated yet
    (False, None, "UpToDate", "OutOfDate"),             # TD 1.0 body: no relaunch rule
])
def test_td_relaunch_rule(factory: DcapFactory, td15: bool, svn2: bytes | None, platform: str,
                          result: str) -> None:
    b = factory.build(
        td15=td15, tee_tcb_svn=RELAUNCH_SVN, tee_tcb_svn2=svn2,
        tcb_levels=[tcb_level(platform, tdx=UPDATED_SVN), tcb_level("OutOfDate",
                                                                    tdx=RELAUNCH_SVN)],
        module_levels=[isv_level(5, "UpToDate"), isv_level(3, "OutOfDate")])
    assert b.verifier().verify(b.quote, at=b.at).tcb_status == result


def test_memory_source_and_caches_do_not_leak_between_collateral(factory: DcapFactory) -> None:
    good = factory.build()
    bad = factory.build(tcb_next_update=AT - DAY)
    v = TdxVerifier(MemoryCollateral(good.collateral),
                    trusted_root_spki_sha256=[good.root_fp])
    assert v.verify(good.quote, at=good.at).tcb_status == "UpToDate"
    v.collateral = MemoryCollateral(bad.collateral)
    with pytest.raises(Expired, match="^tcb_info:"):
        v.verify(good.quote, at=good.at)
