"""The uid-range registry and the config rewrite of a TD's user namespace (ADR 0048); the
mounts and the attacks are in tests/integration/test_td_boundary_runtime.py."""

from __future__ import annotations

import pathlib

import pytest

from arca.errors import InvalidInput
from arca.host.runtime import userns


def test_ranges_are_disjoint_never_shared_and_reclaimed_only_when_their_owner_is_gone(
        tmp_path: pathlib.Path) -> None:
    reg = str(tmp_path / "reg")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    noted: list[int] = []
    sa = userns.allocate(str(a), reg, note=noted.append)
    assert noted[-1] == sa  # recorded before it could be held
    sb = userns.allocate(str(b), reg)
    assert sa != sb
    assert abs(userns.host_id(sa) - userns.host_id(sb)) >= userns.SIZE
    assert userns.owner_of(sa, reg) == str(a) and userns.owner_of(sb, reg) == str(b)
    assert (pathlib.Path(reg).stat().st_mode & 0o777) == 0o711
    st = (pathlib.Path(reg) / str(sa)).stat()  # only the range's root (and host root) enter
    assert (st.st_mode & 0o777, st.st_uid) == (0o700, userns.host_id(sa))
    # Same owner name again: a slot of its own, never a held one.
    again = userns.allocate(str(a), reg)
    assert again not in (sa, sb)
    userns.release(again, str(a), reg)
    # Only the owner releases.
    userns.release(sa, str(b), reg)
    assert userns.owner_of(sa, reg) == str(a)
    # An owner that is gone (a crash): its slot is taken back when met.
    a.rmdir()
    assert userns.allocate(str(a), reg) == sa  # probes from a's start: meets sa, reclaims
    userns.release(sb, str(b), reg)
    assert userns.owner_of(sb, reg) is None


def test_the_range_sits_between_subordinate_ids_and_systemds_reserved_ranges() -> None:
    assert userns.BASE > 600_100_000  # useradd's SUB_UID_MAX
    assert userns.BASE >= 1_879_048_192  # above systemd-nspawn's container ranges
    assert userns.host_id(userns.SLOTS - 1) + userns.SIZE <= 0x7FFE0000 < 2**31
    assert userns.SLOTS >= 4000


def _config(**linux: object) -> dict:  # type: ignore[type-arg]
    return {"process": {"user": {"uid": 1000, "gid": 1000}, "args": ["true"]},
            "root": {"path": "rootfs"},
            "mounts": [{"destination": "/sys", "type": "sysfs", "source": "sysfs",
                        "options": ["nosuid"]}],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}], **linux}}


def test_isolate_maps_the_range_and_keeps_the_process_ids() -> None:
    host = userns.host_id(3)
    cfg = userns.isolate(_config(), host, "/r/3/rootfs")
    assert {"type": "user"} in cfg["linux"]["namespaces"]
    assert cfg["linux"]["uidMappings"] == [{"containerID": 0, "hostID": host, "size": 65536}]
    assert cfg["linux"]["gidMappings"] == cfg["linux"]["uidMappings"]
    assert cfg["process"]["user"] == {"uid": 1000, "gid": 1000}  # measured ids unchanged
    assert cfg["root"]["path"] == "/r/3/rootfs"
    # The host's network (no network namespace of its own): sysfs bound from the host.
    assert cfg["mounts"][0]["type"] == "bind" and cfg["mounts"][0]["source"] == "/sys"
    own = _config()
    own["linux"]["namespaces"].append({"type": "network"})
    assert userns.isolate(own, host, "/x")["mounts"][0]["type"] == "sysfs"
    # A pod's sandbox IPC namespace (joined by path) cannot mount mqueue: left out.
    pod = _config()
    pod["mounts"].append({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"})
    pod["linux"]["namespaces"].append({"type": "ipc", "path": "/proc/1/ns/ipc"})
    assert [m["destination"] for m in userns.isolate(pod, host, "/x")["mounts"]] == ["/sys"]


@pytest.mark.parametrize("change, words", [
    (lambda c: c["linux"]["namespaces"].append({"type": "user"}), "own user namespace"),
    (lambda c: c["linux"].update(uidMappings=[{"containerID": 0, "hostID": 5, "size": 1}]),
     "id mappings"),
    (lambda c: c["process"]["user"].update(uid=70000), "process.user.uid 70000"),
    (lambda c: c["process"]["user"].update(additionalGids=[65536]), "additionalGids 65536"),
])
def test_isolate_refuses_what_it_cannot_map(change, words: str) -> None:  # type: ignore[no-untyped-def]
    cfg = _config()
    change(cfg)
    with pytest.raises(InvalidInput, match=words):
        userns.isolate(cfg, userns.host_id(0), "/x")


def test_overlay_layers_named_relative_to_an_unknown_directory_are_refused() -> None:
    with pytest.raises(userns.UsernsError, match="relative"):
        userns._layers(["rw", "lowerdir=12/fs:11/fs", "upperdir=/s/13/fs", "workdir=/s/13/work"])
    lowers, upper, work, rest = userns._layers(
        ["rw", "lowerdir=/l/a\\:b:/l/c", "upperdir=/u", "workdir=/w", "index=off"])
    assert lowers == ["/l/a:b", "/l/c"] and (upper, work, rest) == ("/u", "/w", ["index=off"])


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="user namespaces with maps need root")
def test_the_namespace_helper_dies_with_a_runtime_killed_while_it_lives() -> None:
    """``userns_fd``'s helper (a clone of the runtime, the container id on its command line)
    must not outlive a runtime killed with ``kill -9`` between the clone and its own kill of
    the helper: the helper would pause for ever (this left a process behind in CI)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    # The runtime stand-in stalls inside the window: writing the helper's uid_map.
    code = (
        "import time\n"
        "from arca.host.runtime import userns\n"
        "def stall(path, *a, **k):\n"
        "    print(path.split('/')[2], flush=True); time.sleep(60)\n"
        "userns.open = stall\n"
        "userns.userns_fd(0x7ff00000)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout is not None
    helper = int(proc.stdout.readline())
    assert os.path.exists(f"/proc/{helper}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = pathlib.Path(f"/proc/{helper}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return  # gone
        if state in ("Z", "X"):
            return  # dead, waiting for init to reap it
        time.sleep(0.02)
    os.kill(helper, signal.SIGKILL)
    pytest.fail("the helper outlived its killed runtime")
