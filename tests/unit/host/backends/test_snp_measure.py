"""SEV-SNP reference values: Arca's inputs to sev-snp-measure, against known answers that
another implementation published (virtee/sev, the Rust crate), and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from arca.host.backends.snp.measure import launch_digest
from arca.wire.errors import InvalidInput
from tests.support.tee_fixtures import OVMF_AMDSEV, fixture, sev_crate_file

#: Source: virtee/sev 8.0.0 as packaged by Debian (librust-sev-dev 8.0.0-1),
#: tests/measurement/ovmf_AmdSev_suffix.bin (the last 4 KiB of an AmdSevX64 OVMF: its footer
#: table and SEV metadata) with the expected digests of tests/measurement.rs:
#: test_sev_snp_only, test_snp_default, test_snp_ovmf_hash_gen_snp_only. Kernel and initrd
#: are /dev/null there (empty files), the vCPU model EPYC-v4, the VMM QEMU.
SUFFIX_SHA256 = "8f765dfabc127fc0a938a0744a3103ec15864d7d794eb4c398aa976b6d6ab16c"
KNOWN = [
    ("console=ttyS0 loglevel=7", 0x1,
     "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362"
     "f390ef83a92046c042e706363b4b08fa"),
    ("console=ttyS0 loglevel=7", 0x21,
     "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba"
     "7e534442e7e1e17895dfe778d0228977"),
    ("", 0x1,
     "ddc5224521617a536ee7ce9dd6224d1b58a8d4fda1c741f3ac99fc4bfa04ba6e"
     "9fc98646d4a07a9079397fa3852819b5"),
]
NULL = Path("/dev/null")


@pytest.fixture()
def suffix() -> Path:
    return fixture(sev_crate_file("tests/measurement/ovmf_AmdSev_suffix.bin"), SUFFIX_SHA256)


@pytest.mark.parametrize(("cmdline", "features", "expected"), KNOWN)
def test_snp_launch_digest_matches_virtee_sev_published_values(suffix, cmdline, features,
                                                               expected):
    got = launch_digest(suffix, NULL, NULL, cmdline, vcpus=1, cpu="EPYC-v4",
                        guest_features=features)
    assert got.hex() == expected


def test_snp_launch_digest_covers_cmdline_vcpus_and_cpu(suffix):
    base = launch_digest(suffix, NULL, NULL, "arca.descriptor=00")
    assert launch_digest(suffix, NULL, NULL, "arca.descriptor=00") == base  # deterministic
    for other in (launch_digest(suffix, NULL, NULL, "arca.descriptor=01"),
                  launch_digest(suffix, NULL, NULL, "arca.descriptor=00", vcpus=2),
                  launch_digest(suffix, NULL, NULL, "arca.descriptor=00", cpu="EPYC-Milan")):
        assert other != base


def test_snp_launch_digest_covers_kernel_and_initrd(suffix, tmp_path):
    kernel, initrd = tmp_path / "k", tmp_path / "i"
    kernel.write_bytes(b"kernel")
    initrd.write_bytes(b"initrd")
    base = launch_digest(suffix, kernel, initrd, "x")
    initrd.write_bytes(b"initrD")
    assert launch_digest(suffix, kernel, initrd, "x") != base


def test_snp_debian_amdsev_firmware_measures_a_direct_boot(tmp_path):
    fw = fixture(OVMF_AMDSEV)
    kernel = tmp_path / "k"
    kernel.write_bytes(b"\0" * 4096)
    one = launch_digest(fw, kernel, None, "console=hvc0")
    assert len(one) == 48 and launch_digest(fw, kernel, None, "console=hvc0") == one


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"vcpus": 0}, "vcpus must be"),
    ({"cpu": "Pentium"}, "unknown SNP vCPU model"),
    ({"guest_features": -1}, "64-bit"),
])
def test_snp_bad_parameters_are_one_line(suffix, kwargs, message):
    with pytest.raises(InvalidInput, match=message) as e:
        launch_digest(suffix, NULL, NULL, "", **kwargs)
    assert "\n" not in str(e.value)


def test_snp_firmware_without_kernel_hashes_is_refused(tmp_path):
    plain = fixture(sev_crate_file("tests/measurement/ovmf_OvmfX64_suffix.bin"))
    with pytest.raises(InvalidInput, match="SNP_KERNEL_HASHES"):
        launch_digest(plain, NULL, NULL, "")
    with pytest.raises(InvalidInput, match="not a readable file"):
        launch_digest(tmp_path / "absent.fd", NULL, NULL, "")
    garbage = tmp_path / "garbage.fd"
    garbage.write_bytes(b"\x17" * 8192)
    with pytest.raises(InvalidInput, match="SNP launch digest over"):
        launch_digest(garbage, NULL, NULL, "")
