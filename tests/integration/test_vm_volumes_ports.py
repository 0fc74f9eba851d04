"""``arca run --tee vm`` with ``-p`` and ``-v`` (ADR 0042), end to end with real QEMU (TCG),
virtiofsd and pasta: a real HTTP request from the host reaches busybox ``httpd`` in the guest;
host directories are shared into the guest (rw both ways, live; ``:ro`` enforced); a volume the
measured init-data does not allow, or one over the image's content, is refused at create by the
host and — when a hostile host skips that and edits the VM's launch — by the guest before its
agent runs (so before any evidence or secret). A file volume reaches the guest without its
siblings, and one the host swaps for a symlink into the TD is refused by the guest (ADR 0057)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

from arca.host.backends.vm import assets
from tests.support.arca_run import arca, arca_env
from tests.support.containerd import mounts_mentioning, processes_mentioning
from tests.support.images import build_busybox_image
from tests.support.vm import launch_editing_runc


def _unavailable() -> str | None:
    if os.geteuid() != 0 or not (shutil.which("runc") and shutil.which("umoci")
                                 and shutil.which("pasta")):
        return "needs root, runc, umoci and pasta"
    try:
        assets.check_host()
        assets.virtiofsd()
    except assets.VmUnavailable as e:
        return str(e)
    return None


pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(_unavailable() is not None,
                                 reason=f"vm volumes unavailable: {_unavailable()}")]

#: One VM boot under TCG with 8 engineers on 2 cores: generous, a wedged VM still fails.
BOOT = 300
#: In the guest: copy the ro volume's file into the rw one, try to write to the ro one, then
#: serve the rw volume over HTTP (busybox httpd) on the published port.
SERVE = ("cat /conf/in.txt > /data/copied.txt; cat /etc/app.conf > /data/app.txt; "
         "if echo x >> /etc/app.conf; then echo file-ro-broken; else echo file-ro-enforced; fi "
         "> /data/file-ro.txt 2>/dev/null; "
         "if echo x > /conf/new.txt; then echo ro-broken; else echo ro-enforced; fi "
         "> /data/ro.txt 2>/dev/null; echo guest-wrote > /data/guest.txt; "
         "exec busybox httpd -f -p 8080 -h /data")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[pathlib.Path, str,
                                                                       dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("vmio")
    layout = tmp / "layout"
    build_busybox_image(layout, "v1", cmd=["sh", "-c", "echo workload-ran"])
    with arca_env(tmp, "avv-") as env:
        yield tmp, f"oci:{layout}:v1", env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float) -> bytes:
    """The body at ``url``, retried while the VM boots."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return bytes(urllib.request.urlopen(url, timeout=5).read())
        except OSError:
            assert time.monotonic() < deadline, f"{url} not reachable within {timeout}s"
            time.sleep(1)


def leftovers(env: dict[str, str], timeout: float = 20) -> list[str]:
    """QEMU, VMM or virtiofsd processes, TD directories, mounts and namespaces of this test's
    state (other engineers' VMs on the host are not ours)."""
    run = pathlib.Path(env["ARCA_RUN"])
    deadline = time.monotonic() + timeout
    while True:
        out = []
        for line in (processes_mentioning("qemu-system") + processes_mentioning("virtiofsd")
                     + processes_mentioning("/arca-vmm/vmm.py")):
            try:
                if env["ARCA_RUN"] in pathlib.Path(
                        f"/proc/{line.split(':')[0]}/mountinfo").read_text():
                    out.append(line)
            except OSError:
                continue
        for d in ("td", "containers", "simtee/tds", "netns"):
            out += [str(p) for p in (run / d).glob("*")] if (run / d).is_dir() else []
        out += mounts_mentioning(env["ARCA_ROOT"]) + mounts_mentioning(env["ARCA_RUN"])
        if not out or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


def test_published_port_and_volumes_reach_the_guest(world) -> None:  # type: ignore[no-untyped-def]
    tmp, image, env = world
    rw, ro = tmp / "rw", tmp / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "in.txt").write_text("written-by-the-host\n")
    # a file volume (ADR 0057) whose directory holds a sibling the guest must never see
    etc = tmp / "host-etc"
    etc.mkdir()
    (etc / "app.conf").write_text("conf-from-the-host\n")
    (etc / "sibling.key").write_text("host-only\n")
    port = free_port()
    res = arca(env, "run", "-d", "--name", "web", "--tee", "vm", "-p", f"127.0.0.1:{port}:8080",
               "-v", f"{rw}:/data", "-v", f"{ro}:/conf:ro",
               "-v", f"{etc / 'app.conf'}:/etc/app.conf:ro", image, "sh", "-c", SERVE,
               timeout=BOOT)
    assert res.returncode == 0, res.stderr
    try:
        # a real HTTP request from the host, through pasta, QEMU's hostfwd, into the guest
        assert get(f"http://127.0.0.1:{port}/guest.txt", BOOT) == b"guest-wrote\n"
        # the guest's writes are on the host; the host's file was read in the guest
        assert (rw / "guest.txt").read_text() == "guest-wrote\n"
        assert (rw / "copied.txt").read_text() == "written-by-the-host\n"
        # :ro is enforced in the guest, and nothing reached the host's directory
        assert (rw / "ro.txt").read_text() == "ro-enforced\n"
        assert sorted(os.listdir(ro)) == ["in.txt"]
        # the file volume: read in the guest at /etc/app.conf, :ro there too; its virtiofsd
        # (chrooted in what it serves) sees one entry, the file, and none of its siblings
        assert (rw / "app.txt").read_text() == "conf-from-the-host\n"
        assert (rw / "file-ro.txt").read_text() == "file-ro-enforced\n"
        assert (etc / "app.conf").read_text() == "conf-from-the-host\n"
        vmm = [line.split(":")[0] for line in processes_mentioning("/arca-vmm/vmm.py")
               if env["ARCA_RUN"] in pathlib.Path(
                   f"/proc/{line.split(':')[0]}/mountinfo").read_text()]
        served = [sorted(os.listdir(f"/proc/{pid}/root"))  # chrooted: its root is its share
                  for pid in (line.split(":")[0] for line in processes_mentioning("virtiofsd"))
                  if pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1]
                  in vmm]
        assert ["file"] in served and len(served) == 3, served
        assert not any("sibling.key" in names for names in served), served
        # live: a file the host writes now is served by the guest at once
        (rw / "late.txt").write_text("host-wrote-later\n")
        assert get(f"http://127.0.0.1:{port}/late.txt", 30) == b"host-wrote-later\n"
        # ran in the guest: the VMM's container publishes nothing of its own
        argv = json.loads(next((pathlib.Path(env["ARCA_RUN"]) / "td").glob("*/launch.json"))
                          .read_text())["argv"]
        assert "user,id=net,hostfwd=tcp::8080-:8080" in argv
    finally:
        assert arca(env, "rm", "-f", "web").returncode == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/guest.txt", timeout=2)
    assert leftovers(env) == []
    assert sorted(os.listdir(rw)) == ["app.txt", "copied.txt", "file-ro.txt", "guest.txt",
                                      "late.txt", "ro.txt"]
    assert sorted(os.listdir(etc)) == ["app.conf", "sibling.key"]


def test_volume_not_allowed_or_over_the_image_is_refused_at_create(world) -> None:  # type: ignore[no-untyped-def]
    tmp, image, env = world
    data = tmp / "refused"
    data.mkdir(exist_ok=True)
    init = tmp / "init-data.toml"
    init.write_text('version = "0.1.0"\nalgorithm = "sha384"\n\n[data]\n')
    cases = [(("--init-data", str(init), "-v", f"{data}:/data"), "/data",
              "policy does not allow"),
             (("-v", f"{data}:/etc"), "/etc", "measured content")]
    for args, dest, why in cases:
        res = arca(env, "run", "--rm", "--tee", "vm", *args, image, timeout=BOOT)
        assert res.returncode != 0, res.stdout
        assert dest in res.stderr and why in res.stderr, res.stderr
        assert "Traceback" not in res.stderr and "workload-ran" not in res.stdout
    assert leftovers(env) == []


def _hostile_runc(tmp: pathlib.Path, destination: str) -> pathlib.Path:
    """A runc that points the VM's first volume at ``destination``."""
    return launch_editing_runc(tmp / f"hostile-runc-{destination.strip('/')}",
                                f'doc["volumes"][0]["destination"] = {destination!r}')


@pytest.mark.parametrize(("destination", "why"), [
    ("/etc", "it covers a non-empty directory of the image's measured content"),
    ("/srv", "the measured policy does not allow a mount there")])
def test_volume_the_host_redirects_is_refused_in_the_guest(world, destination: str,  # type: ignore[no-untyped-def]
                                                           why: str) -> None:
    tmp, image, env = world
    data = tmp / "hostile"
    data.mkdir(exist_ok=True)
    (data / "passwd").write_text("root::0:0::/:/bin/sh\n")
    # the measured policy allows /data and /etc (the host's check passes for /data)
    init = tmp / "init-allow.toml"
    init.write_text('version = "0.1.0"\nalgorithm = "sha384"\n\n[data]\n'
                    'policy = \'{"allow_mounts": ["/data", "/etc"]}\'\n')
    hostile = {**env, "ARCA_RUNC": str(_hostile_runc(tmp, destination))}
    res = arca(hostile, "run", "--rm", "--tee", "vm", "--init-data", str(init),
               "-v", f"{data}:/data", image, timeout=BOOT)
    assert res.returncode != 0, res.stdout
    # refused by the guest (the host's check passed: /data is allowed), naming the mount,
    # before the agent ran: no evidence was asked for, no workload output
    assert f"guest: volume arca-vol0 at {destination} refused: {why}" in res.stderr, res.stderr
    assert "workload-ran" not in res.stdout
    assert leftovers(env) == []


def test_file_volume_the_host_swaps_for_a_symlink_is_refused_in_the_guest(world) -> None:  # type: ignore[no-untyped-def]
    """ADR 0057: after the runtime checked a file volume, a hostile runc serves, in its place, a
    directory whose ``file`` is a symlink into the TD (the image's /etc/passwd; it could as well
    be a file the workload then serves). The guest binds the share's one entry and keeps it only
    if it is a regular file of that share: refused, named, before the agent runs."""
    tmp, image, env = world
    conf = tmp / "swap.conf"
    conf.write_text("honest\n")
    evil = tmp / "evil-share"
    evil.mkdir(exist_ok=True)
    if not (evil / "file").is_symlink():
        (evil / "file").symlink_to("/newroot/etc/passwd")
    runc = tmp / "hostile-runc-swap"
    runc.write_text(f"""#!{sys.executable}
import json, os, shutil, sys
args = sys.argv[1:]
if "--bundle" in args:
    path = os.path.join(args[args.index("--bundle") + 1], "config.json")
    cfg = json.load(open(path))
    for m in cfg.get("mounts", []):
        if m.get("destination", "").endswith("/vol/0/file"):
            m["destination"], m["source"] = m["destination"][:-5], {str(evil)!r}
    json.dump(cfg, open(path, "w"))
os.execv(shutil.which("runc"), ["runc", *args])
""")
    runc.chmod(0o755)
    res = arca({**env, "ARCA_RUNC": str(runc)}, "run", "--rm", "--tee", "vm",
               "-v", f"{conf}:/srv/app.conf", image, timeout=BOOT)
    assert res.returncode != 0, res.stdout
    assert ("guest: volume arca-vol0 at /srv/app.conf refused: the host's file is not a regular "
            "file of its share") in res.stderr, res.stderr
    assert "workload-ran" not in res.stdout and "Traceback" not in res.stderr


def _uncached_runc(tmp: pathlib.Path) -> pathlib.Path:
    """A runc that starts the volumes' virtiofsd with ``--cache never`` (as a hostile host may:
    virtiofsd is the host's), so the guest looks every path up again: what the host's share
    holds at the moment the guest resolves a path is what it gets."""
    return launch_editing_runc(
        tmp / "uncached-runc",
        'for argv in doc["virtiofsd"]: argv[argv.index("--cache") + 1] = "never"')


def _swap_for_a_link(directory: pathlib.Path, target: str, stop: threading.Event) -> None:
    """The hostile host's half of the race: the moment the guest creates ``directory`` (the
    mount point of a volume nested in another volume), replace it with a symbolic link."""
    while not stop.is_set():
        try:
            if directory.is_dir() and not directory.is_symlink():
                directory.rmdir()
                directory.symlink_to(target)
                return
        except OSError:
            pass
        time.sleep(0.0002)


def test_a_nested_volume_the_host_swaps_for_a_link_never_lands_outside(world) -> None:  # type: ignore[no-untyped-def]
    """Two volumes the measured policy allows, one nested in the other (``/data``,
    ``/data/sub``): the inner one's mount point lies in the outer share, which the host
    controls. The guest checked it (missing: fine) and created it; the host swaps it for a
    link to ``/bin`` before the guest mounts, and a link resolves from PID 1's root — the
    initramfs, outside everything the agent checks. Before the fix the inner share (the host's
    ``busybox``) covered the initramfs's ``/bin`` and the guest's PID 1 ran it as root: host
    code in the TD, before the agent. Now the guest mounts on the directory it walked to
    without following a link, or refuses the volume, naming it."""
    tmp, image, env = world
    outer, payload = tmp / "outer", tmp / "payload"
    outer.mkdir()
    payload.mkdir()
    shutil.copy2(assets.BUSYBOX, payload / "busybox.real")
    marker = payload / "ran-in-the-guest"
    (payload / "busybox").write_text(f"#!/bin/busybox.real sh\necho \"$*\" >> /bin/{marker.name}"
                                     "\nexec /bin/busybox.real \"$@\"\n")
    (payload / "busybox").chmod(0o755)
    hostile = {**env, "ARCA_RUNC": str(_uncached_runc(tmp))}
    stop = threading.Event()
    racer = threading.Thread(target=_swap_for_a_link, args=(outer / "sub", "/bin", stop),
                             daemon=True)
    racer.start()
    try:
        res = arca(hostile, "run", "--rm", "--tee", "vm", "-v", f"{outer}:/data",
                   "-v", f"{payload}:/data/sub", image, timeout=BOOT)
    finally:
        stop.set()
        racer.join()
    assert (outer / "sub").is_symlink(), "the host's swap never happened: the test proves nothing"
    assert not marker.exists(), f"the host's busybox ran in the guest: {marker.read_text()!r}"
    if res.returncode != 0:  # refused in the guest, before the agent ran, naming the volume
        assert "guest: volume arca-vol1 at /data/sub refused" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr and "workload-ran" not in res.stdout
    else:  # or mounted where the guest walked to: the workload ran as usual
        assert "workload-ran" in res.stdout
    assert leftovers(env) == []
