"""The ``vm`` backend's host pieces without booting a VM: reproducible initramfs and rootfs
images, what the launch measurement covers, the VMM's config rewrite and its refusals, the
guest's device-mapper structures, and vm reports accepted only as vm."""

from __future__ import annotations

import os
import pathlib
import shutil
import stat
import struct
import subprocess

import pytest

from arca.guest import vminit
from arca.host.backends.vm import launch, rewrite_config
from arca.host.backends.vm.initramfs import SIG_MAGIC, unsigned, write_cpio
from arca.wire.errors import ConfigError, InvalidInput

HAVE_IMAGE_TOOLS = bool(shutil.which("mkfs.erofs") and shutil.which("veritysetup"))


def test_dm_structures_have_the_kernel_sizes() -> None:
    # linux/dm-ioctl.h: sizeof(struct dm_ioctl) == 312, sizeof(struct dm_target_spec) == 40
    assert struct.calcsize(vminit.DM_IOCTL_FMT) == 312
    assert struct.calcsize(vminit.DM_SPEC_FMT) == 40


def test_cpio_is_reproducible_and_sorted(tmp_path: pathlib.Path) -> None:
    items = {"b": (stat.S_IFREG | 0o644, b"bee", 0), "a": (stat.S_IFDIR | 0o755, b"", 0),
             "a/x": (stat.S_IFLNK | 0o777, b"../b", 0)}
    d1 = write_cpio(items, tmp_path / "1.cpio")
    d2 = write_cpio(dict(reversed(list(items.items()))), tmp_path / "2.cpio")
    assert d1 == d2
    assert (tmp_path / "1.cpio").read_bytes() == (tmp_path / "2.cpio").read_bytes()
    # whole pages: the initrd must end below microvm's ACPI tables in the last page of RAM
    assert (tmp_path / "1.cpio").stat().st_size % 4096 == 0
    if shutil.which("cpio"):
        listing = subprocess.run(["cpio", "-itv", "--quiet"], input=(tmp_path / "1.cpio")
                                 .read_bytes(), capture_output=True, check=True).stdout.decode()
        names = [line.split()[-1] if "->" not in line else line.split()[-3]
                 for line in listing.splitlines()]
        assert names == ["a", "a/x", "b"]
        assert "1970" in listing  # mtime 0


def test_unsigned_drops_exactly_the_appended_signature() -> None:
    import lzma

    from arca.host.backends.vm import assets

    try:
        kernel = assets.Kernel(assets.data_dir())
    except assets.VmUnavailable as e:
        pytest.skip(str(e))
    ko = next(kernel.modules.rglob("erofs.ko*"))
    raw = ko.read_bytes()
    raw = lzma.decompress(raw) if ko.name.endswith(".xz") else raw
    assert raw.endswith(SIG_MAGIC)  # Debian signs its modules
    bare = unsigned(raw)
    trailer = raw[len(bare):]
    # what is cut: the PKCS#7 signature, its 12-byte struct module_signature (length last,
    # big-endian), the magic; the module's ELF before it is untouched
    assert len(trailer) == int.from_bytes(trailer[-len(SIG_MAGIC) - 4:-len(SIG_MAGIC)],
                                          "big") + 12 + len(SIG_MAGIC)
    assert raw.startswith(bare) and bare[:4] == b"\x7fELF"
    assert unsigned(bare) == bare  # an unsigned module passes unchanged
    with pytest.raises(ConfigError, match="signature trailer"):
        unsigned(b"\x7fELF" + (1 << 20).to_bytes(4, "big") + SIG_MAGIC)


def _launch(**kw: object) -> launch.Launch:
    return launch.Launch(**{"kernel": "k", "initrd": "i", "rootfs": "r",  # type: ignore[arg-type]
                            "cmdline": launch.cmdline("ab" * 32 + ":8", "cd" * 48), **kw})


def test_measurement_covers_kernel_initrd_cmdline_vcpus_not_memory(tmp_path: pathlib.Path
                                                                   ) -> None:
    k, i = tmp_path / "k", tmp_path / "i"
    k.write_bytes(b"kernel")
    i.write_bytes(b"initrd")
    base = _launch(kernel=str(k), initrd=str(i))
    m = base.measurement()
    assert _launch(kernel=str(k), initrd=str(i), memory_mib=512).measurement() == m
    assert _launch(kernel=str(k), initrd=str(i), vcpus=2).measurement() != m
    other_cmd = launch.cmdline("ab" * 32 + ":9", "cd" * 48)
    assert _launch(kernel=str(k), initrd=str(i), cmdline=other_cmd).measurement() != m
    i.write_bytes(b"initrd!")  # a changed file is measured anew (new size/mtime)
    assert _launch(kernel=str(k), initrd=str(i)).measurement() != m
    assert launch.Launch.from_json(base.to_json()) == base


def test_shape_from_the_oci_limits() -> None:
    assert launch.shape_from_spec({}) == (1, launch.DEFAULT_MEMORY_MIB)
    res = {"linux": {"resources": {"cpu": {"quota": 150000, "period": 100000},
                                   "memory": {"limit": 320 << 20}}}}
    assert launch.shape_from_spec(res) == (2, 128)


def test_rewrite_makes_qemu_the_process_and_refuses_volumes(tmp_path: pathlib.Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.setenv("ARCA_ROOT", str(tmp_path / "root"))
    config = {"root": {"path": "rootfs"}, "process": {"args": ["sh"], "env": ["A=1"]},
              "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                         {"destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts",
                          "options": ["rbind", "ro"]}]}
    vm = _launch()
    new = rewrite_config(config, tmp_path / "td", vm)
    assert new["root"]["readonly"] is True
    assert new["process"]["args"][-1] == "/arca-vmm/vmm.py"
    dests = {m["destination"]: m for m in new["mounts"]}
    for d in ("/etc/hosts", "/usr", launch.IN_CONTAINER_KERNEL, launch.IN_CONTAINER_ROOTFS):
        assert d in dests
    assert "ro" in dests[launch.IN_CONTAINER_ROOTFS]["options"]
    assert dests[launch.IN_CONTAINER_TD]["source"] == str(tmp_path / "td")
    # the one capability added (the VMM pages QEMU's boot images out), no other
    caps = new["process"]["capabilities"]
    assert all(caps[k] == ["CAP_SYS_NICE"] for k in ("bounding", "effective", "permitted"))
    kept = rewrite_config({**config, "process": {**config["process"], "capabilities": {
        "bounding": ["CAP_KILL"]}}}, tmp_path / "td", vm)["process"]["capabilities"]
    assert kept["bounding"] == ["CAP_KILL", "CAP_SYS_NICE"]
    volume = {"destination": "/data", "type": "bind", "source": "/srv/data",
              "options": ["rbind"]}
    with pytest.raises(InvalidInput, match="mount /srv/data -> /data refused"):
        rewrite_config({**config, "mounts": [volume]}, tmp_path / "td", vm)


@pytest.mark.skipif(not HAVE_IMAGE_TOOLS, reason="needs erofs-utils and veritysetup")
def test_rootfs_image_is_reproducible_and_verity_catches_a_flip(tmp_path: pathlib.Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    from arca.host.backends.vm.rootfs import ensure_rootfs_image

    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "hello").write_bytes(b"hello " * 2000)
    (tree / "link").symlink_to("bin/hello")
    images = []
    for n in ("a", "b"):
        monkeypatch.setenv("ARCA_ROOT", str(tmp_path / n))
        os.utime(tree / "bin" / "hello", (1000 * len(images), 1000 * len(images)))
        images.append(ensure_rootfs_image(tree))
    assert images[0].root_hash == images[1].root_hash
    assert images[0].path.read_bytes() == images[1].path.read_bytes()
    again = ensure_rootfs_image(tree)  # cached: the same file
    assert again.path == images[1].path
    img = images[1].path
    data = bytearray(img.read_bytes())
    data[data.index(b"hello hello") + 7] ^= 1
    os.chmod(img, 0o644)
    img.write_bytes(bytes(data))
    size = images[1].data_blocks * 4096
    res = subprocess.run(["veritysetup", "verify", "--no-superblock", f"--hash-offset={size}",
                          f"--data-blocks={images[1].data_blocks}", str(img), str(img),
                          images[1].root_hash], capture_output=True, text=True)
    assert res.returncode != 0


def test_vm_reports_verify_only_as_vm(tmp_path: pathlib.Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from arca.host.simtee.locations import root_cert_path
    from arca.host.simtee.platform import evidence_bytes, load_platform
    from arca.verifier.base import Expected
    from arca.verifier.sim import SimVerifier
    from arca.wire.descriptor import LaunchDescriptor, ProcessSpec
    from arca.wire.errors import BindingMismatch

    monkeypatch.setenv("ARCA_ROOT", str(tmp_path))
    plat = load_platform()
    rd, measured = bytes(range(64)), bytes([7]) * 48
    desc = LaunchDescriptor("vm", "sha256:" + "a" * 64, "sha256:" + "b" * 64,
                            ProcessSpec(("/bin/true",)))
    ev = evidence_bytes(plat.sign_report(desc, None, rd, "td-1", measured))
    root = [root_cert_path().read_bytes()]
    claims = SimVerifier(root, tee="vm").verify(ev, expected=Expected(rd, bytes(48)))
    assert (claims.tee, claims.values["measurement"]) == ("vm", measured.hex())
    with pytest.raises(BindingMismatch, match="report is for tee 'vm'"):
        SimVerifier(root).verify(ev, expected=Expected(rd, bytes(48)))
    sim_desc = LaunchDescriptor("sim", "sha256:" + "a" * 64, "sha256:" + "b" * 64,
                                ProcessSpec(("/bin/true",)))
    sim_ev = evidence_bytes(plat.sign_report(sim_desc, None, rd, "td-2"))
    with pytest.raises(BindingMismatch, match="report is for tee 'sim'"):
        SimVerifier(root, tee="vm").verify(sim_ev, expected=Expected(rd, bytes(48)))


def test_volumes_become_virtio_fs_shares_and_a_file_a_private_share(tmp_path: pathlib.Path,
                                                                   monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    from arca.host.backends.vm import shares_of

    monkeypatch.setenv("ARCA_ROOT", str(tmp_path / "root"))
    data, conf = tmp_path / "data", tmp_path / "conf"
    data.mkdir()
    conf.mkdir()
    mounts = [{"destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts",
               "options": ["rbind", "ro"]},
              {"destination": "/data", "type": "bind", "source": str(data),
               "options": ["rbind", "rw"]},
              # a directory under /etc is a volume, not orchestrator plumbing
              {"destination": "/etc/app", "type": "bind", "source": str(conf),
               "options": ["rbind", "ro"]}]
    config = {"root": {"path": "rootfs"}, "process": {"args": ["sh"]}, "mounts": mounts}
    shares = shares_of(config)
    assert [(s.source, s.destination, s.readonly, s.tag) for s in shares] == [
        (str(data), "/data", False, "arca-vol0"), (str(conf), "/etc/app", True, "arca-vol1")]
    new = rewrite_config(config, tmp_path / "td", _launch(), shares, "/var/lib/arca-vm/vfs")
    dests = {m["destination"]: m for m in new["mounts"]}
    assert "/data" not in dests and "/etc/app" not in dests  # never in the VMM's own root
    assert dests[f"{launch.IN_CONTAINER_VOLUMES}/0"]["source"] == str(data)
    assert "rw" in dests[f"{launch.IN_CONTAINER_VOLUMES}/0"]["options"]
    assert "ro" in dests[f"{launch.IN_CONTAINER_VOLUMES}/1"]["options"]
    assert dests[launch.IN_CONTAINER_VIRTIOFSD]["source"] == "/var/lib/arca-vm/vfs"
    assert "/etc/hosts" in dests
    argv = shares[1].virtiofsd(launch.virtiofsd_prefix(None), 1)
    assert argv[0] == "/usr/libexec/virtiofsd" and argv[-1] == "--readonly"
    assert f"{launch.IN_CONTAINER_VOLUMES}/1" in argv
    # a file (also under /etc, unless it is name-resolution plumbing): a private share
    # directory in the VMM's container holding a bind of just that file (ADR 0057)
    (conf / "app.conf").write_text("x")
    (conf / "sibling").write_text("not for the guest")
    single = {"destination": "/etc/app.conf", "type": "bind", "source": str(conf / "app.conf"),
              "options": ["rbind", "ro"]}
    (share,) = shares_of({**config, "mounts": [single]})
    assert share.file and share.guest() == {"tag": "arca-vol0", "destination": "/etc/app.conf",
                                            "readonly": True, "file": True}
    new = rewrite_config({**config, "mounts": [single]}, tmp_path / "td", _launch(), [share])
    binds = [m for m in new["mounts"] if m["source"] == str(conf / "app.conf")]
    assert [m["destination"] for m in binds] == [f"{launch.IN_CONTAINER_VOLUMES}/0/file"]
    assert f"{launch.IN_CONTAINER_VOLUMES}/0" in share.virtiofsd(["v"], 0)
    assert not any(m["source"] == str(conf) for m in new["mounts"])
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for bad in (fifo, tmp_path / "missing"):
        with pytest.raises(InvalidInput, match="neither"):
            shares_of({**config, "mounts": [{**single, "source": str(bad)}]})


def test_published_ports_and_shares_extend_qemus_arguments() -> None:
    base = launch.qemu_argv("qemu", _launch())
    assert launch.host_io_args(base, [], [], 256) == base
    share = launch.Share("/srv", "/data", False, "arca-vol0")
    argv = launch.host_io_args(base, launch.parse_ports("tcp/8080, udp/53"), [share], 256)
    assert "user,id=net,hostfwd=tcp::8080-:8080,hostfwd=udp::53-:53" in argv
    assert argv[argv.index("-M") + 1].endswith(",memory-backend=mem")
    assert "memory-backend-memfd,id=mem,size=256M,share=on" in argv
    assert "vhost-user-fs-device,chardev=fs0,tag=arca-vol0" in argv
    for bad in ("tcp/0", "sctp/80", "tcp/x", "8080"):
        with pytest.raises(ValueError, match="PROTO/PORT"):
            launch.parse_ports(bad)


def test_the_guest_mounts_a_volume_only_where_the_measured_policy_allows(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from arca.guest.boundary import volume_refusal
    from arca.wire.errors import PolicyDenied
    from arca.wire.initdata import ExecPolicy

    root = tmp_path / "newroot"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\n")
    (root / "empty").mkdir()
    (root / "link").symlink_to("etc")
    (root / "app").write_text("#!/bin/sh\n")
    policy = ExecPolicy(allow_mounts=("/data", "/empty", "/etc", "/etc/passwd", "/link/x",
                                      "/app", "/proc/x", "/.arca", "/run/arca/x"))
    refused = {
        "/srv": "policy does not allow", "/etc": "non-empty directory",
        "/etc/passwd": "covers a file", "/link/x": "symbolic link", "/app": "covers a file",
        "/proc/x": "kernel tree", "/.arca": "guest runtime", "/run/arca/x": "guest runtime",
        "/": "guest runtime"}
    for dest, why in refused.items():
        assert why in (volume_refusal(str(root), dest, policy) or ""), dest
    assert volume_refusal(str(root), "/data", policy) is None
    assert volume_refusal(str(root), "/empty", policy) is None
    calls: list[tuple[tuple[str, ...], str]] = []
    monkeypatch.setattr(vminit, "NEW", str(root))
    # the mount lands on the directory the guest walked to and holds open (ADR 0060)
    monkeypatch.setattr(vminit, "sh", lambda *a, on: calls.append(
        (a, os.readlink(f"/proc/self/fd/{on}"))))
    with pytest.raises(PolicyDenied, match="volume arca-vol0 at /data/../etc refused"):
        vminit.volume("arca-vol0", "/data/../etc", False, policy, False)
    assert calls == []
    vminit.volume("arca-vol1", "data", True, policy, False)
    assert calls == [(("mount", "-t", "virtiofs", "-o", "ro,nosuid,nodev", "arca-vol1"),
                      f"{root}/data")]
    assert (root / "data").is_dir()


def test_a_nested_volumes_mount_point_swapped_for_a_link_after_the_check_is_refused(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ADR 0060 without a VM: the inner mount point of nested volumes lies in the outer share,
    which the host controls. It passes the check (missing), then the host makes it a link
    (here: right after the check); the guest must not mount through it."""
    from arca.guest import boundary
    from arca.wire.errors import PolicyDenied
    from arca.wire.initdata import ExecPolicy

    root, outside = tmp_path / "newroot", tmp_path / "initramfs-bin"
    (root / "data").mkdir(parents=True)  # the outer volume's share
    outside.mkdir()
    policy = ExecPolicy(allow_mounts=("/data", "/data/sub"))
    calls: list[str] = []
    monkeypatch.setattr(vminit, "NEW", str(root))
    monkeypatch.setattr(vminit, "sh", lambda *a, on: calls.append(
        os.readlink(f"/proc/self/fd/{on}")))
    check = boundary.volume_refusal

    def check_then_swap(rootfs: str, dest: str, pol: ExecPolicy) -> str | None:
        why = check(rootfs, dest, pol)
        (root / "data" / "sub").symlink_to(outside)  # the host, right after the check
        return why

    monkeypatch.setattr(vminit, "volume_refusal", check_then_swap)
    with pytest.raises(PolicyDenied, match="volume arca-vol1 at /data/sub refused: sub is a "
                       "symbolic link or not a directory"):
        vminit.volume("arca-vol1", "/data/sub", False, policy, False)
    assert calls == []
    (root / "data" / "sub").unlink()
    monkeypatch.setattr(vminit, "volume_refusal", check)
    vminit.volume("arca-vol1", "/data/sub", False, policy, False)
    assert calls == [f"{root}/data/sub"]


def test_installed_qemu_takes_the_bounded_translation_cache() -> None:
    """``-accel tcg,tb-size=N`` as qemu_argv passes it: QEMU starts with it, and really checks
    the property (a misspelt one is refused), so the bound is not silently ignored."""
    from arca.host.backends.vm import assets

    qemu = shutil.which(assets.QEMU)
    if qemu is None:
        pytest.skip("no QEMU installed")
    argv = launch.qemu_argv(qemu, _launch())
    accel = argv[argv.index("-accel") + 1]
    assert accel == f"tcg,tb-size={launch.TCG_TB_MIB}"

    def run(acc: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([qemu, "-nodefaults", "-accel", acc, "-machine", "none",
                               "-display", "none", "-S", "-monitor", "stdio"], input="quit\n",
                              text=True, capture_output=True, timeout=60, check=False)

    assert run(accel).returncode == 0
    assert "tb-sise" in run(accel.replace("tb-size", "tb-sise")).stderr
