"""``arca measure`` and ``arca policy generate`` for ``tdx``/``snp`` from an image alone: the
values cover the image's process (the descriptor digest on the measured command line), are
deterministic, change with every launch input, and bad input is one line with nothing left.

Firmware: Debian's ovmf-amdsev / ovmf-inteltdx (scripts/tee-fixtures.sh). Kernel: the SNP
digest hashes any file; RTMR1 needs a PE/COFF image, for which Debian's signed shim stands
in here (it is an EFI application as the guest's EFI-stub bzImage is).
"""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from arca.wire.descriptor import LaunchDescriptor
from tests.support.cli import run_main
from tests.support.images import build_busybox_image
from tests.support.tee_fixtures import OVMF_AMDSEV, SHIM, TDVF, fixture

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (overlay mounts)")]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("hwmeasure")
    mp = pytest.MonkeyPatch()
    mp.setenv("ARCA_ROOT", str(tmp / "root"))
    mp.setenv("ARCA_RUNTIME_CONFIG", str(tmp / "no-runtime.json"))
    layout = tmp / "layout"
    build_busybox_image(layout, "one", cmd=["/bin/echo", "one"])
    build_busybox_image(layout, "two", cmd=["/bin/echo", "two"])
    initrd = tmp / "initrd"
    initrd.write_bytes(b"arca initramfs stand-in\n")
    try:
        yield layout, tmp, initrd
    finally:
        mp.undo()


def snp_args(initrd: pathlib.Path, *extra: str) -> list[str]:
    fw = fixture(OVMF_AMDSEV)
    return ["--tee", "snp", "--firmware", str(fw), "--kernel", str(fixture(SHIM)),
            "--initrd", str(initrd), *extra]


def tdx_args(initrd: pathlib.Path, *extra: str) -> list[str]:
    return ["--tee", "tdx", "--firmware", str(fixture(TDVF)), "--kernel", str(fixture(SHIM)),
            "--initrd", str(initrd), *extra]


def measured(capsys, layout, tag, args) -> dict:  # type: ignore[no-untyped-def]
    code, out, err = run_main(capsys, "measure", f"oci:{layout}:{tag}", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_snp_measure_is_deterministic_and_covers_process_and_shape(capsys, image):
    layout, _, initrd = image
    one = measured(capsys, layout, "one", snp_args(initrd))
    assert measured(capsys, layout, "one", snp_args(initrd)) == one
    launch = one["launch"]
    digest = LaunchDescriptor.from_json(one["descriptor"]).measurement().hex()
    # The vm backend's dm-verity rootfs image root and the descriptor digest are measured.
    assert launch["cmdline"] == ("console=ttyS0 panic=-1 quiet "
                                 f"arca.root={launch['rootfs_root']} arca.desc={digest}")
    assert len(launch["rootfs_root"].split(":")[0]) == 64
    assert one["measurement"] == launch["measurement"] and len(one["measurement"]) == 96
    assert one["init_data_hash"] == "00" * 32  # HOST_DATA without init-data
    others = [measured(capsys, layout, "two", snp_args(initrd)),
              measured(capsys, layout, "one", snp_args(initrd, "--vcpus", "2")),
              measured(capsys, layout, "one", snp_args(initrd, "--cpu", "EPYC-Milan")),
              measured(capsys, layout, "one", snp_args(initrd, "--cmdline", "console=hvc0"))]
    assert len({o["measurement"] for o in [one, *others]}) == 5


def test_tdx_measure_is_deterministic_and_rtmr2_covers_the_process(capsys, image):
    layout, _, initrd = image
    one = measured(capsys, layout, "one", tdx_args(initrd))
    assert measured(capsys, layout, "one", tdx_args(initrd)) == one
    two = measured(capsys, layout, "two", tdx_args(initrd))
    assert (one["launch"]["mrtd"], one["launch"]["rtmr1"]) == (two["launch"]["mrtd"],
                                                                two["launch"]["rtmr1"])
    assert one["launch"]["rtmr2"] != two["launch"]["rtmr2"]
    assert one["launch"]["rtmr0"] == "*" and one["init_data_hash"] == "00" * 48
    pinned = measured(capsys, layout, "one", tdx_args(initrd, "--rtmr0", "ab" * 48))
    assert pinned["launch"]["rtmr0"] == "ab" * 48


def test_policy_generate_snp_pins_digest_host_data_policy_and_tcb(capsys, image):
    layout, tmp, initrd = image
    out_dir = tmp / "policy"
    code, out, err = run_main(capsys, "policy", "generate", f"oci:{layout}:one", *snp_args(initrd),
                         "--resource", "default/key/app", "--out-dir", str(out_dir), "--json",
                         "--min-tcb", "snp=8", "--min-tcb", "microcode=115")
    assert code == 0, err
    gen = json.loads(out)
    m = measured(capsys, layout, "one", snp_args(initrd))
    assert gen["grants"] == [f"snp/{m['measurement']}/{'00' * 32}/0x0000000000030000"]
    values = json.loads((out_dir / "reference-values.json").read_text())
    assert values == {"release:default:key:app": gen["grants"],
                      "min_tcb:snp": ["snp=8", "microcode=115"]}
    assert "package policy" in (out_dir / "resource-policy.rego").read_text()
    code, _, err = run_main(capsys, "policy", "generate", f"oci:{layout}:one", *tdx_args(initrd),
                       "--resource", "default/key/app", "--out-dir", str(tmp / "tdxpol"))
    assert code == 0 and "rtmr0 is not pinned" in err, err


@pytest.mark.parametrize(("args", "message"), [
    (["--tee", "tdx", "--kernel", "/nonexistent/bzImage"], "firmware /usr/share/ovmf/"),
    (["--tee", "tdx", "--firmware", "/nonexistent/fw.fd"], "firmware /nonexistent/fw.fd"),
    (["--tee", "snp", "--vcpus", "0"], "vcpus must be 1..512"),
    (["--tee", "snp", "--snp-policy", "0xb0000"], "DEBUG"),
    (["--tee", "snp", "--guest-features", "lots"], "is not a number"),
    (["--tee", "sim", "--vcpus", "2"], "takes no launch options"),
])
def test_bad_launch_input_is_one_line(capsys, image, args, message):
    layout, tmp, initrd = image
    before = sorted(p.name for p in (tmp / "root").rglob("*")) if (tmp / "root").exists() \
        else []
    code, out, err = run_main(capsys, "measure", f"oci:{layout}:one", *args)
    assert code == 125 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    after = sorted(p.name for p in (tmp / "root").rglob("*")) if (tmp / "root").exists() \
        else []
    assert [p for p in after if p not in before and p.startswith("m-")] == []


def test_firmware_of_the_other_tee_is_refused(capsys, image):
    layout, _, initrd = image
    code, _, err = run_main(capsys, "measure", f"oci:{layout}:one", "--tee", "snp",
                       "--firmware", str(fixture(TDVF)), "--kernel", str(fixture(SHIM)))
    assert code == 125 and "SNP" in err and "Traceback" not in err, err


@pytest.mark.parametrize("tee", ["tdx", "snp"])
def test_measure_with_the_vm_backends_kernel_and_initramfs(capsys, image, tee):
    """Defaults: the vm backend's guest kernel as its bzImage and the initramfs built for this
    guest runtime, i.e. exactly what the launcher boots."""
    from arca.host.backends.vm import assets

    layout, _, _ = image
    if not (assets.data_dir() / "vmlinuz").is_file():
        pytest.skip("no guest bzImage: run scripts/setup.sh")
    firmware = fixture(TDVF if tee == "tdx" else OVMF_AMDSEV)
    args = ["--tee", tee, "--firmware", str(firmware)]
    one = measured(capsys, layout, "one", args)
    assert measured(capsys, layout, "one", args) == one
    assert pathlib.Path(one["launch"]["initrd_path"]).is_file()
    key = "rtmr2" if tee == "tdx" else "measurement"
    assert measured(capsys, layout, "two", args)["launch"][key] != one["launch"][key]
