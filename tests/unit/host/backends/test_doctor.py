"""``arca doctor`` and the host checks behind it: the reasons are the backends' own (the ones
``check_host`` raises for ``arca-runtime create``/``arca run``), each exact and one line."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

from arca.host import backends
from arca.host.backends import _confidential as cvm
from arca.host.backends.base import BackendUnavailable
from arca.host.backends.snp import FACTS as SNP_FACTS
from arca.host.backends.snp import SnpBackend
from arca.host.backends.tdx import FACTS as TDX_FACTS
from arca.host.backends.tdx import TdxBackend
from arca.host.doctor import examine
from tests.support.cli import run_main
from tests.support.tee_fixtures import OVMF_AMDSEV, SHIM, TDVF, fixture


def test_doctor_json_lists_every_tee_with_the_backends_reasons(capsys):
    code, out, _ = run_main(capsys, "doctor", "--json")
    assert code == 0
    report = json.loads(out)["backends"]
    assert report["sim"] == {"available": True, "problems": []}
    for name in ("tdx", "snp"):
        assert report[name]["problems"] == backends.get(name).host_problems()
        assert report[name]["available"] == (report[name]["problems"] == [])
    assert report["sgx"]["problems"] == ["this build has no backend that launches it"]


def test_doctor_check_host_and_doctor_agree():
    for report in examine(("tdx", "snp")):
        if report.available:
            continue
        with pytest.raises(BackendUnavailable) as e:
            backends.get(report.name).check_host()
        assert str(e.value) == f"TEE {report.name!r} is not available on this host: " \
            f"{report.problems[0]}"


def test_doctor_tee_exit_status(capsys):
    code, out, _ = run_main(capsys, "doctor", "--tee", "sim")
    assert code == 0 and out.startswith("sim  ok")
    if backends.get("tdx").host_problems():
        code, out, _ = run_main(capsys, "doctor", "--tee", "tdx")
        assert code == 1 and out.startswith("tdx  no: ")
    code, _, err = run_main(capsys, "doctor", "--tee", "quantum")
    assert code == 125 and "unknown TEE 'quantum'" in err


def test_kvm_reasons(tmp_path):
    assert cvm.kvm_problems(TDX_FACTS, dev=str(tmp_path / "kvm")) == [
        f"no {tmp_path / 'kvm'}: this host offers no KVM (bare metal with Intel TDX and the KVM "
        "module loaded is required)"]
    # /dev/null opens but is no KVM: no VM types at all; the module parameter reads "N".
    problems = cvm.kvm_problems(SNP_FACTS, dev="/dev/null", sysfs=lambda _: "N\n")
    assert problems[0].startswith("KVM cannot create AMD SEV-SNP guests: its VM types are "
                                  "{none reported}, type 4 is missing")
    assert problems[1] == ("AMD SEV-SNP is not enabled in KVM: "
                           "/sys/module/kvm_amd/parameters/sev_snp is 'N'")


def test_qemu_reasons_from_the_installed_qemu():
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        assert cvm.qemu_problems(TDX_FACTS, "qemu-system-x86_64") == [
            "QEMU 'qemu-system-x86_64' not found (install qemu-system-x86)"]
        return
    version = cvm.qemu_version(qemu)
    shown = ".".join(map(str, version))
    if version[:2] < (10, 1):  # Debian 12's newest (bookworm-backports 10.0.2)
        assert cvm.qemu_problems(TDX_FACTS, qemu) == [
            f"QEMU {shown} ({qemu}) is too old for Intel TDX: tdx-guest needs QEMU >= 10.1"]
        no_object = replace(TDX_FACTS, qemu_min=(9, 1))
        assert cvm.qemu_problems(no_object, qemu) == [
            f"QEMU {shown} ({qemu}) has no tdx-guest object"]
    if version[:2] >= (9, 1):
        assert cvm.qemu_problems(SNP_FACTS, qemu) == []
    assert cvm.qemu_problems(SNP_FACTS, "/nonexistent/qemu") == [
        "QEMU '/nonexistent/qemu' not found (install qemu-system-x86)"]


def test_firmware_reasons():
    tdvf, amdsev, shim = str(fixture(TDVF)), str(fixture(OVMF_AMDSEV)), str(fixture(SHIM))
    tdx = TdxBackend(None, cvm.CvmSettings(firmware=shim, kernel="/nonexistent/k"))
    problems = cvm.file_problems(tdx.settings, TDX_FACTS, tdx.check_firmware)
    assert problems[0] == (f"firmware {shim}: no OVMF footer table (not an OVMF/TDVF image)")
    # No initramfs configured: Arca builds the vm backend's for the guest runtime.
    assert problems[1:] == ["guest kernel /nonexistent/k is missing or unreadable"]
    snp = SnpBackend(None, cvm.CvmSettings(firmware=tdvf, kernel=tdvf, initrd=tdvf))
    problems = cvm.file_problems(snp.settings, SNP_FACTS, snp.check_firmware)
    assert len(problems) == 1 and problems[0].startswith(f"firmware {tdvf}: ")
    assert cvm.file_problems(SnpBackend(None, cvm.CvmSettings(
        firmware=amdsev, kernel=tdvf, initrd=tdvf)).settings, SNP_FACTS,
        SnpBackend(None).check_firmware) == []
