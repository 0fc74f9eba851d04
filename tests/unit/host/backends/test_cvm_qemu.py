"""The QEMU command lines of the tdx and snp backends, held against what QEMU accepts.

SNP: every ``-object`` Arca passes is created by the installed QEMU (>= 9.1: Debian
bookworm-backports' 10.0.2, installed by the vm backend's setup), which refuses unknown
properties and a ``host-data`` of the wrong length; and the properties ``-object TYPE,help``
lists are a superset of what Arca sets, except ``cbitpos``/``reduced-phys-bits``, which QEMU
10.0.2 accepts (shown by creating the object) but does not list.
TDX: ``tdx-guest`` needs QEMU >= 10.1, which no Debian 12 registry has; where no such QEMU is
installed, the properties are checked against the QAPI schema facts in
research/vm_backends.md §1.3 (``TdxGuestProperties``, "Since: 10.1") instead, and the test says
so; with such a QEMU the same object-creation check as for SNP runs.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import shutil
import subprocess

import pytest

from arca.host.backends import _confidential as cvm
from arca.host.backends.snp import DEFAULTS as SNP_DEFAULTS
from arca.host.backends.snp import SnpBackend
from arca.host.backends.tdx import DEFAULTS as TDX_DEFAULTS
from arca.host.backends.tdx import TdxBackend
from arca.kbs.evidence import INIT_DATA_FIELD
from arca.kbs.protocol import init_data_digest
from arca.wire.errors import ConfigError
from tests.support.tee_fixtures import OVMF_AMDSEV, SHIM, TDVF, fixture

INIT_DATA = b'version = "0.1.0"\nalgorithm = "sha384"\n[data]\nkbs_url = "http://127.0.0.1:1"\n'
#: research/vm_backends.md §1.3: QAPI TdxGuestProperties (QEMU 10.1).
TDX_QAPI = {"attributes", "sept-ve-disable", "mrconfigid", "mrowner", "mrownerconfig",
            "quote-generation-socket"}
#: Properties QEMU 10.0.2 accepts on sev-snp-guest but leaves out of `-object ...,help`.
SNP_UNLISTED = {"cbitpos", "reduced-phys-bits"}


def host_data(init_data):
    return SnpBackend(None, SNP_DEFAULTS).init_data_hash(init_data)


def mrconfigid(init_data):
    return TdxBackend(None, TDX_DEFAULTS).init_data_hash(init_data)


def settings(defaults, **kw):
    return cvm.settings_from_config({"kernel": "/boot/vmlinuz", "initrd": "/boot/initrd",
                                     **kw}, defaults, origin="test",
                                    extra_types={"cbitpos": int} if "cbitpos" in kw else {})


def qemu_at_least(major: int, minor: int) -> str | None:
    q = shutil.which("qemu-system-x86_64")
    if q is None:
        return None
    try:
        return q if cvm.qemu_version(q)[:2] >= (major, minor) else None
    except ConfigError:
        return None


def create_objects(qemu: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Let QEMU create (and so validate) every ``-object`` of ``argv``, without a machine."""
    objects = [x for flag, value in zip(argv, argv[1:], strict=False) if flag == "-object"
               for x in ("-object", value)]
    return subprocess.run([qemu, "-nodefaults", "-machine", "none", "-display", "none", "-S",
                           "-monitor", "stdio", *objects], input="quit\n", text=True,
                          capture_output=True, timeout=60, check=False)


def snp_argv() -> list[str]:
    backend = SnpBackend(None, settings(SNP_DEFAULTS, cbitpos=51))
    return backend.qemu_command("console=ttyS0 arca.descriptor=ab", INIT_DATA)


def tdx_argv() -> list[str]:
    return TdxBackend(None, settings(TDX_DEFAULTS)).qemu_command("console=ttyS0 arca.descriptor=ab",
                                                           INIT_DATA)


def test_snp_command_line_shape():
    argv = snp_argv()
    assert argv[argv.index("-accel") + 1] == "kvm,kernel-irqchip=split"
    assert argv[argv.index("-machine") + 1] == (
        "q35,confidential-guest-support=tee0,memory-backend=mem0")
    assert argv[argv.index("-bios") + 1] == "/usr/share/ovmf/OVMF.amdsev.fd"
    assert argv[argv.index("-cpu") + 1] == "EPYC-v4"
    assert argv[argv.index("-append") + 1] == "console=ttyS0 arca.descriptor=ab"
    obj = next(v for v in argv if v.startswith("sev-snp-guest,"))
    props = dict(kv.split("=", 1) for kv in obj.split(",")[1:])
    assert props["kernel-hashes"] == "on" and props["policy"] == "0x30000"
    assert props["cbitpos"] == "51" and props["reduced-phys-bits"] == "1"
    assert base64.b64decode(props["host-data"]) == host_data(INIT_DATA)


def test_snp_objects_are_accepted_by_the_installed_qemu():
    qemu = qemu_at_least(9, 1)
    if qemu is None:
        pytest.skip("no QEMU >= 9.1 installed (the vm backend's setup installs one)")
    argv = snp_argv()
    done = create_objects(qemu, argv)
    assert done.returncode == 0, done.stderr
    listed = cvm.qemu_object_properties(qemu, "sev-snp-guest")
    assert cvm.object_properties(argv)["sev-snp-guest"] - SNP_UNLISTED <= listed
    assert "memory-backend-memfd" in cvm.object_properties(argv)
    # QEMU really checks: a wrong property or a short host-data is refused.
    bad = [v + ",no-such-prop=1" if v.startswith("sev-snp-guest") else v for v in argv]
    assert create_objects(qemu, bad).returncode != 0
    short = [v.replace("host-data=", "host-data=AAAA") if v.startswith("sev-snp") else v
             for v in argv]
    assert "not equal to 32" in create_objects(qemu, short).stderr


def test_q35_machine_and_kvm_accel_properties_exist_in_the_installed_qemu():
    qemu = qemu_at_least(9, 1)
    if qemu is None:
        pytest.skip("no QEMU >= 9.1 installed")
    argv = snp_argv()
    out = subprocess.run([qemu, "-machine", "q35,help"], capture_output=True, text=True,
                         timeout=60, check=False).stdout
    for prop in argv[argv.index("-machine") + 1].split(",")[1:]:
        assert f"{prop.split('=')[0]}=" in out
    if not pathlib.Path("/dev/kvm").exists():
        pytest.skip("no /dev/kvm: QEMU cannot check the kvm accelerator's properties")
    accel = argv[argv.index("-accel") + 1]
    ok = subprocess.run([qemu, "-nodefaults", "-accel", accel, "-machine", "none", "-display",
                         "none", "-S", "-monitor", "stdio"], input="quit\n", text=True,
                        capture_output=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([qemu, "-nodefaults", "-accel", accel + ",no-such-prop=1", "-machine",
                          "none", "-display", "none", "-S", "-monitor", "stdio"],
                         input="quit\n", text=True, capture_output=True, timeout=60, check=False)
    assert "no-such-prop" in bad.stderr


def test_tdx_object_properties():
    argv = tdx_argv()
    obj = json.loads(argv[argv.index("-object") + 1])
    assert obj["qom-type"] == "tdx-guest" and obj["id"] == "tee0"
    assert base64.b64decode(obj["mrconfigid"]) == mrconfigid(INIT_DATA)
    assert obj["quote-generation-socket"] == {"type": "unix",
                                              "path": "/var/run/tdx-qgs/qgs.socket"}
    assert argv[argv.index("-cpu") + 1] == "host"
    assert argv[argv.index("-bios") + 1] == "/usr/share/ovmf/OVMF.inteltdx.ms.fd"
    qemu = qemu_at_least(10, 1)
    if qemu is None:
        # No QEMU >= 10.1 installable here: the QAPI schema facts (see module docstring).
        assert cvm.object_properties(argv)["tdx-guest"] <= TDX_QAPI
    else:
        done = create_objects(qemu, argv)
        assert done.returncode == 0, done.stderr


def test_init_data_binding_is_the_brokers_rule():
    """HOST_DATA/MRCONFIGID as the launcher sets them equal what the KBS expects in the
    evidence for the same init-data (arca.kbs: digest cut or zero-padded to the field)."""
    digest = init_data_digest(INIT_DATA.decode())
    assert host_data(INIT_DATA) == digest[:INIT_DATA_FIELD["snp"]].ljust(32, b"\0")
    assert mrconfigid(INIT_DATA) == digest[:INIT_DATA_FIELD["tdx"]].ljust(48, b"\0")
    assert host_data(None) == bytes(32) and mrconfigid(None) == bytes(48)


def test_snp_debug_policy_is_refused():
    with pytest.raises(ConfigError, match="DEBUG"):
        SnpBackend(None, cvm.settings_from_config({"policy": 0xB0000}, SNP_DEFAULTS,
                                                  origin="t", extra_types={"policy": int}))


@pytest.mark.parametrize(("section", "message"), [
    ({"vcpus": 0}, "vcpus must be 1..512"),
    ({"vcpus": "2"}, "'vcpus' must be a integer"),
    ({"memory_mib": 64}, "memory_mib must be"),
    ({"qemu": ""}, "non-empty string"),
    ({"firmwar": "x"}, "unknown key 'firmwar'"),
    ([], "must be a JSON object"),
])
def test_bad_runtime_config_is_one_line(section, message):
    with pytest.raises(ConfigError, match=message) as e:
        cvm.load_settings("snp", SNP_DEFAULTS, SnpBackend.extra_types, section=section)
    assert "\n" not in str(e.value)


def test_runtime_config_file_sections(tmp_path, monkeypatch):
    from arca.host.runtime.config import load_config

    cfg = tmp_path / "runtime.json"
    files = {"firmware": str(fixture(TDVF)), "kernel": str(fixture(SHIM))}
    cfg.write_text(json.dumps({"default_tee": "snp", "snp": {"vcpus": 2, "policy": 0x30000},
                               "tdx": {"memory_mib": 1024, "qgs_socket": "/run/qgs.sock",
                                       **files}}))
    monkeypatch.setenv("ARCA_RUNTIME_CONFIG", str(cfg))
    assert load_config().default_tee == "snp"  # the runtime accepts the sections
    assert SnpBackend().settings.vcpus == 2
    tdx = TdxBackend().configure({"vcpus": 4})
    assert (tdx.settings.memory_mib, tdx.settings.vcpus) == (1024, 4)
    assert tdx.settings.extra["qgs_socket"] == "/run/qgs.sock"
    with pytest.raises(ConfigError, match="kernel /nonexistent: missing or unreadable"):
        TdxBackend().configure({"kernel": "/nonexistent"})


# -- the launch: the vm backend's VMM container with a confidential q35 VM ------------------

def launch_ref(backend, tmp_path):  # type: ignore[no-untyped-def]
    from arca.wire.descriptor import LaunchDescriptor, ProcessSpec

    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"initramfs")
    descriptor = LaunchDescriptor(backend.name, "sha256:" + "11" * 32, "sha256:" + "22" * 32,
                                  ProcessSpec(("/bin/echo", "hi")))
    return backend.reference_for(descriptor, INIT_DATA, {
        "rootfs_root": "ab" * 32 + ":485", "rootfs_path": str(tmp_path / "rootfs.img"),
        "initrd_path": str(initrd)})


def test_snp_launch_argv_devices_and_objects_exist_in_the_installed_qemu(tmp_path):
    qemu = qemu_at_least(9, 1)
    if qemu is None:
        pytest.skip("no QEMU >= 9.1 installed")
    backend = SnpBackend(None, cvm.settings_from_config(
        {"firmware": str(fixture(OVMF_AMDSEV)), "kernel": str(fixture(SHIM)), "cbitpos": 51},
        SNP_DEFAULTS, origin="t", extra_types=SnpBackend.extra_types))
    ref = launch_ref(backend, tmp_path)
    argv = backend.launch_argv(ref.extra["cmdline"], INIT_DATA)
    assert argv[argv.index("-bios") + 1] == cvm.IN_CONTAINER_FIRMWARE
    assert argv[argv.index("-append") + 1] == ref.extra["cmdline"]
    assert ref.extra["cmdline"].split()[-2] == "arca.root=" + "ab" * 32 + ":485"
    done = create_objects(qemu, argv)
    assert done.returncode == 0, done.stderr
    devices = subprocess.run([qemu, "-device", "help"], capture_output=True, text=True,
                             timeout=60, check=False).stdout
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag == "-device":
            assert f'name "{value.split(",")[0]}"' in devices, value


def test_tdx_prepare_makes_the_vmm_container_with_kvm_firmware_and_qgs(tmp_path, monkeypatch):
    from arca.host.backends.base import Launch, LaunchInputs
    from arca.wire.descriptor import ProcessSpec

    if not pathlib.Path("/dev/kvm").exists():
        pytest.skip("no /dev/kvm to hand to the VMM")
    monkeypatch.setenv("ARCA_ROOT", str(tmp_path / "root"))
    qgs = tmp_path / "qgs.socket"
    qgs.touch()
    backend = TdxBackend(None, cvm.settings_from_config(
        {"firmware": str(fixture(TDVF)), "kernel": str(fixture(SHIM)),
         "qgs_socket": str(qgs)}, TDX_DEFAULTS, origin="t",
        extra_types=TdxBackend.extra_types))
    ref = launch_ref(backend, tmp_path)
    td = tmp_path / "td"
    td.mkdir()
    config = {"ociVersion": "1.0.2", "process": {"args": ["/bin/echo", "hi"], "cwd": "/"},
              "root": {"path": "rootfs"}, "mounts": [], "linux": {}}
    new = backend.prepare(Launch("c1", tmp_path, td),
                          LaunchInputs(tmp_path, ProcessSpec(("/bin/echo", "hi")), INIT_DATA,
                                       None),  # type: ignore[arg-type]
                          ref, config)
    assert new["process"]["args"][-1] == "/arca-vmm/vmm.py"
    mounts = {m["destination"]: m for m in new["mounts"]}
    assert mounts[cvm.IN_CONTAINER_FIRMWARE]["source"] == str(fixture(TDVF))
    assert "ro" in mounts["/arca-vm/vmlinuz"]["options"]
    assert mounts[str(qgs)]["source"] == str(qgs)
    kvm = os.stat("/dev/kvm").st_rdev
    assert {"path": "/dev/kvm", "type": "c", "major": os.major(kvm), "minor": os.minor(kvm),
            "fileMode": 0o600, "uid": 0, "gid": 0} in new["linux"]["devices"]
    assert {"allow": True, "type": "c", "major": os.major(kvm), "minor": os.minor(kvm),
            "access": "rw"} in new["linux"]["resources"]["devices"]
    argv = json.loads((td / "launch.json").read_text())["argv"]
    obj = json.loads(argv[argv.index("-object") + 1])
    assert obj["qom-type"] == "tdx-guest" and obj["quote-generation-socket"]["path"] == str(qgs)
    assert json.loads((td / "descriptor.json").read_text()) == ref.descriptor.to_json()
    assert (td / "init-data.toml").read_bytes() == INIT_DATA
