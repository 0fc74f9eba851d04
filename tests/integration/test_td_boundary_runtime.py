"""Issue 13 items 1-4 and issue 11 §3, as attacks on ``arca-runtime`` with real runc (the calls
containerd's shim makes; tests/integration/test_td_boundary_ctr.py repeats the main ones
through ``ctr`` and ``arca run``): hooks, propagation, shared namespaces, mounts over measured
content, the TD device reached from outside the TD, a same id under another runc root, and a
hostile runc that slips a mount past the runtime (the agent refuses it before any report).
Every refusal names what it refuses and leaves nothing behind."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

from tests.integration.test_runtime_lifecycle import (
    NEEDS_ROOT_AND_RUNC,
    RUN,
    Runtime,
    assert_clean,
    sim_runtime,
)

pytestmark = [pytest.mark.integration, NEEDS_ROOT_AND_RUNC]


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory):
    with sim_runtime(tmp_path_factory, "tdboundary") as runtime:
        yield runtime


def _edit(b: pathlib.Path, change) -> None:  # type: ignore[no-untyped-def]
    cfg = json.loads((b / "config.json").read_text())
    change(cfg)
    (b / "config.json").write_text(json.dumps(cfg))


def _create(rt: Runtime, cid: str, b: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return rt.run("create", "--bundle", str(b), "--pid-file", str(rt.tmp / f"{cid}.pid"), cid,
                  check=False)


def _refused(rt: Runtime, cid: str, change, *words: str) -> None:  # type: ignore[no-untyped-def]
    b = rt.bundle(cid, ["sh", "-c", "echo workload-ran"])
    _edit(b, change)
    res = _create(rt, cid, b)
    assert res.returncode != 0, f"{cid}: created"
    for w in words:
        assert w in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert_clean(rt, cid)


def _init(policy: str = "") -> dict[str, str]:
    doc = 'version = "0.1.0"\n[data]\n' + (f"policy = '''\n{policy}\n'''\n" if policy else "")
    return {"io.arca.init-data": base64.b64encode(doc.encode()).decode()}


# -- item 4: hooks and propagation ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["createContainer", "startContainer"])
def test_hooks_inside_the_td_are_refused(rt: Runtime, kind: str) -> None:
    marker = rt.tmp / f"hook-{kind}"

    def hook(cfg):  # type: ignore[no-untyped-def]
        cfg["hooks"] = {kind: [{"path": "/bin/sh", "args": ["sh", "-c", f"touch {marker}"]}]}

    _refused(rt, f"hook-{kind.lower()}-{RUN}", hook, kind, "policy.allow_hooks")
    assert not marker.exists()


@pytest.mark.parametrize("prop", ["rshared", "rslave"])
def test_shared_or_slave_propagation_is_refused(rt: Runtime, prop: str) -> None:
    def root_prop(cfg):  # type: ignore[no-untyped-def]
        cfg["linux"]["rootfsPropagation"] = prop

    _refused(rt, f"prop-{prop}-{RUN}", root_prop, f"rootfsPropagation {prop!r}")


# -- item 1: namespaces -----------------------------------------------------------------------


@pytest.mark.parametrize("ns", ["pid", "ipc", "mount"])
def test_the_hosts_namespaces_are_refused(rt: Runtime, ns: str) -> None:
    def drop(cfg):  # type: ignore[no-untyped-def]
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != ns]

    _refused(rt, f"hostns-{ns}-{RUN}", drop, f"the host's {ns} namespace")


def _sleeper(rt: Runtime, cid: str, tee: str | None = "sim", user: int = 0,
             args: tuple[str, ...] = ("sleep", "60"), env: tuple[str, ...] = ()) -> int:
    b = rt.bundle(cid, list(args), tee=tee)
    if env:
        _edit(b, lambda cfg: cfg["process"]["env"].extend(env))
    if user:  # the agent drops to it: CAP_SETUID/CAP_SETGID, as containerd's default spec
        caps = ["CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_KILL"]
        _edit(b, lambda cfg: cfg["process"].update(
            user={"uid": user, "gid": user},
            capabilities={k: caps for k in ("bounding", "effective", "permitted")}))
    rt.run("create", "--bundle", str(b), "--pid-file", str(rt.tmp / f"{cid}.pid"), cid)
    rt.run("start", cid)
    return int((rt.tmp / f"{cid}.pid").read_text())


def test_joining_another_containers_pid_namespace_is_refused(rt: Runtime) -> None:
    other = f"nsother-{RUN}"
    pid = _sleeper(rt, other, tee=None)
    try:
        def join(cfg):  # type: ignore[no-untyped-def]
            for n in cfg["linux"]["namespaces"]:
                if n["type"] == "pid":
                    n["path"] = f"/proc/{pid}/ns/pid"

        _refused(rt, f"nsjoin-{RUN}", join, "joining the pid namespace", "allow_namespaces")
    finally:
        rt.run("delete", "--force", other, check=False)


@pytest.mark.parametrize("ns", ["pid", "mount", "ipc"])
def test_a_container_cannot_join_a_tds_namespace(rt: Runtime, ns: str) -> None:
    """``kubectl debug --target``: a plain container in the TD's PID namespace reads
    ``/proc/1/root/run/arca`` (secrets, device) as root."""
    td = f"nstd-{ns}-{RUN}"
    pid = _sleeper(rt, td)
    try:
        cid = f"nsdebug-{ns}-{RUN}"
        b = rt.bundle(cid, ["cat", "/proc/1/root/run/arca/tee/descriptor.json"], tee=None)
        nsfile = "mnt" if ns == "mount" else ns

        def join(cfg):  # type: ignore[no-untyped-def]
            for n in cfg["linux"]["namespaces"]:
                if n["type"] == ns:
                    n["path"] = f"/proc/{pid}/ns/{nsfile}"

        _edit(b, join)
        res = _create(rt, cid, b)
        assert res.returncode != 0, "a plain container joined the TD's namespace"
        assert f"joining the {ns} namespace of a trust domain" in res.stderr, res.stderr
        assert_clean(rt, cid)
    finally:
        rt.run("delete", "--force", td, check=False)


# -- issue 11 §3: mounts ----------------------------------------------------------------------


def _bind(src: pathlib.Path, dst: str, *opts: str):  # type: ignore[no-untyped-def]
    def add(cfg):  # type: ignore[no-untyped-def]
        cfg["mounts"].append({"destination": dst, "type": "bind", "source": str(src),
                              "options": ["rbind", "ro", *opts]})
    return add


def test_a_mount_over_the_images_code_is_refused(rt: Runtime) -> None:
    evil = rt.tmp / "evil-bin"
    evil.mkdir(exist_ok=True)
    (evil / "sh").write_text("#!/bin/cat /run/arca/secrets/app.key\n")
    _refused(rt, f"mnt-bin-{RUN}", _bind(evil, "/bin"), "at '/bin'",
             "policy.allow_mounts")


@pytest.mark.parametrize("dst", ["/.arca/lib", "/run/arca", "/run/arca/secrets"])
def test_a_mount_over_arcas_own_paths_is_refused(rt: Runtime, dst: str) -> None:
    _refused(rt, f"mnt-arca-{dst.count('/')}{len(dst)}-{RUN}", _bind(rt.tmp, dst),
             f"at {dst!r}", "guest runtime or /run/arca")


def test_an_allowed_mount_lands_but_never_over_measured_content(rt: Runtime) -> None:
    vol = rt.tmp / "vol"
    vol.mkdir(exist_ok=True)
    (vol / "data.txt").write_text("volume-data\n")
    # Allowed where the policy says and the image has nothing: the workload reads it.
    cid = f"mnt-ok-{RUN}"
    b = rt.bundle(cid, ["cat", "/data/data.txt"], annotations=_init('allow_mounts = ["/data"]'))
    _edit(b, _bind(vol, "/data"))
    _create(rt, cid, b)
    rt.run("start", cid)
    deadline = time.monotonic() + 20
    while rt.run("state", cid).stdout.count('"stopped"') == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    rt.run("delete", cid)
    # Allowed by the policy but over the image's /bin: refused all the same.
    b = rt.bundle(f"mnt-over-{RUN}", ["true"], annotations=_init('allow_mounts = ["/bin"]'))
    _edit(b, _bind(vol, "/bin"))
    res = _create(rt, f"mnt-over-{RUN}", b)
    assert res.returncode != 0 and "non-empty directory of the image's measured content" in \
        res.stderr, res.stderr
    assert_clean(rt, f"mnt-over-{RUN}")
    # A policy-allowed mount with shared propagation: refused (exports the TD's mounts).
    b = rt.bundle(f"mnt-shared-{RUN}", ["true"], annotations=_init('allow_mounts = ["/data"]'))
    _edit(b, _bind(vol, "/data", "rshared"))
    res = _create(rt, f"mnt-shared-{RUN}", b)
    assert res.returncode != 0 and "with rshared propagation" in res.stderr, res.stderr
    assert_clean(rt, f"mnt-shared-{RUN}")


def test_the_agent_refuses_a_mount_a_hostile_runc_adds(rt: Runtime, tmp_path: pathlib.Path
                                                       ) -> None:
    """A hostile host skips the runtime's check (here: its runc adds a bind over /bin after
    Arca checked and rewrote config.json); the agent sees it in its mountinfo and stops before
    it asks the device for any report."""
    evil = tmp_path / "evil"
    evil.mkdir()
    hostile = tmp_path / "hostile-runc"
    hostile.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "if '--detach' in sys.argv:\n"
        "    a = sys.argv\n"
        "    cfg = os.path.join(a[a.index('--bundle') + 1] if '--bundle' in a else '.',"
        " 'config.json')\n"
        "    c = json.load(open(cfg))\n"
        f"    c['mounts'].append({{'destination': '/bin', 'type': 'bind', 'source': '{evil}',"
        " 'options': ['rbind', 'ro']})\n"
        "    json.dump(c, open(cfg, 'w'))\n"
        "os.execvp('runc', ['runc', *sys.argv[1:]])\n")
    hostile.chmod(0o755)
    cid = f"hostile-mnt-{RUN}"
    b = rt.bundle(cid, ["sh", "-c", "echo workload-ran"])
    out, err, pid_file = (tmp_path / n for n in ("out", "err", "pid"))
    env = {**os.environ, "ARCA_RUNC": str(hostile)}
    with open(out, "wb") as o, open(err, "wb") as e:
        res = subprocess.run(rt.argv("create", "--bundle", str(b), "--pid-file", str(pid_file),
                                     cid), stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                             timeout=60, env=env)
    assert res.returncode == 0, err.read_text()
    pid = int(pid_file.read_text())
    rt.run("start", cid)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] \
                    == "Z":
                break
        except OSError:
            break
        time.sleep(0.05)
    rt.run("delete", "--force", cid, check=False)
    assert "workload-ran" not in out.read_text()
    assert "arca-agent: error: mount of" in err.read_text(), err.read_text()
    assert "at /bin refused" in err.read_text(), err.read_text()
    from arca.host.simtee import locations

    assert f"report for TD {cid} " not in locations.log_file().read_text()
    assert_clean(rt, cid)


# -- items 1-2: the device answers only its TD ------------------------------------------------


def _ask(sock_path: str) -> dict[str, str]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sock_path)
    s.sendall(json.dumps({"report_data": "00" * 64}).encode() + b"\n")
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    return dict(json.loads(buf))


def _wait_for_workload(pid: int, uid: int) -> int:
    """The host uid of in-container ``uid`` once the agent became the workload."""
    deadline = time.monotonic() + 20
    while True:
        inside, host, _ = (int(x) for x in pathlib.Path(f"/proc/{pid}/uid_map").read_text()
                           .split()[:3])
        if f"Uid:\t{host + uid - inside}\t" in pathlib.Path(f"/proc/{pid}/status").read_text():
            return host + uid - inside
        assert time.monotonic() < deadline, "the workload never ran"
        time.sleep(0.02)


def _as_user(uid: int, attack) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """``attack()`` (a dict of what it got) run by a local user of ``uid`` (fork, setuid:
    ``setpriv --reuid``), ``PermissionError`` reported as ``"denied"``."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            got = attack()
        except Exception as e:  # noqa: BLE001
            got = {"exception": repr(e)}
        os.write(w, json.dumps(got).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        got = json.loads(f.read())
    os.waitpid(child, 0)
    return dict(got)


def _read(path: str) -> str:
    try:
        if os.path.isdir(path):
            return " ".join(sorted(os.listdir(path)))
        return pathlib.Path(path).read_bytes().decode(errors="replace")
    except PermissionError:
        return "denied"


def test_the_td_device_answers_no_host_user_with_the_workloads_uid(rt: Runtime) -> None:
    cid = f"dev-uid-{RUN}"
    uid = 40000 + os.getpid() % 20000
    pid = _sleeper(rt, cid, user=uid)
    try:
        host_uid = _wait_for_workload(pid, uid)
        sock = f"/proc/{pid}/root/run/arca/tee/sim.sock"
        # A local user whose uid is the workload's in-container uid, or even its host uid
        # (which no local user has: its range is the TD's alone), cannot reach the device:
        # the TD's processes are in a user namespace theirs does not own (ADR 0048).
        for attacker in (uid, host_uid):
            answer = _as_user(attacker, lambda: _ask(sock))
            assert "evidence" not in answer, "a host user got a report about the TD"
            assert "PermissionError" in answer.get("exception", ""), answer
        # A process outside the TD that does reach the socket (root here) is refused by the
        # device itself: it answers only the TD's own namespaces (ADR 0020).
        answer = _ask(sock)
        assert "evidence" not in answer, "a process outside the TD got a report about it"
        assert "answers only processes of that TD" in answer.get("error", ""), answer
        # (The TD's own processes still get reports: test_containerd_sim's arca-evidence.)
    finally:
        rt.run("delete", "--force", cid, check=False)
    assert_clean(rt, cid)


# -- item 2: local users ----------------------------------------------------------------------


@pytest.mark.parametrize("tee", ["sim", None])
def test_a_local_user_with_the_workloads_uid_cannot_read_the_tds_secrets(
        rt: Runtime, tee: str | None) -> None:
    """A local user of uid 1000 against a workload of uid 1000: a TD's ``/proc/<pid>/environ``
    and files through ``/proc/<pid>/root`` stay closed; a plain container (no user namespace,
    podman's rootful default) shows the difference."""
    cid = f"localuser-{tee or 'none'}-{RUN}"
    uid = 1000
    pid = _sleeper(rt, cid, tee=tee, user=uid, env=("TOKEN=env-secret-4711",), args=(
        "sh", "-c", "umask 077; echo file-secret-4711 > /dev/shm/secret; exec sleep 60"))
    try:
        host_uid = _wait_for_workload(pid, uid)
        deadline = time.monotonic() + 20
        while not os.path.exists(f"/proc/{pid}/root/dev/shm/secret"):
            assert time.monotonic() < deadline, "the workload never wrote its file"
            time.sleep(0.02)

        def attack() -> dict[str, str]:
            return {"environ": _read(f"/proc/{pid}/environ"),
                    "file": _read(f"/proc/{pid}/root/dev/shm/secret"),
                    "run_arca": _read(f"/proc/{pid}/root/run/arca")}

        got = _as_user(uid, attack)
        if tee is None:  # same host uid: the kernel lets the user in
            assert host_uid == uid
            assert "TOKEN=env-secret-4711" in got["environ"], got
            assert "file-secret-4711" in got["file"], got
            return
        from arca.host.runtime import userns

        assert host_uid >= userns.BASE + uid, host_uid
        assert got == {"environ": "denied", "file": "denied", "run_arca": "denied"}, got
        # Even with the workload's host uid (which no local user has) the namespace holds.
        assert _as_user(host_uid, attack) == got
    finally:
        rt.run("delete", "--force", cid, check=False)
    assert_clean(rt, cid)


def test_each_td_gets_host_ids_no_one_else_has_and_sees_the_images_owners(rt: Runtime) -> None:
    """Container root of two TDs: two disjoint ranges of the registry, each owned by its
    container, no local user's or subordinate id; image files keep their owners inside
    (id-mapped root: uid 0 inside, the range's first id from the host); freed at delete."""
    import pwd

    from arca.host.runtime import userns

    cids = [f"range-{i}-{RUN}" for i in (1, 2)]
    hosts, slots = [], []
    try:
        for cid in cids:
            pid = _sleeper(rt, cid, args=(
                "sh", "-c", "stat -c %u:%g /bin/busybox > /dev/shm/owner; exec sleep 60"))
            host = _wait_for_workload(pid, 0)
            slot = (host - userns.BASE) // userns.SIZE
            assert host == userns.host_id(slot) and 0 <= slot < userns.SLOTS
            assert userns.owner_of(slot) == str(pathlib.Path(os.environ["ARCA_RUN"])
                                                / "containers" / cid)
            owner = pathlib.Path(f"/proc/{pid}/root/dev/shm/owner")
            deadline = time.monotonic() + 20
            while not owner.exists() or not owner.read_text():
                assert time.monotonic() < deadline, "the workload never wrote its file"
                time.sleep(0.02)
            assert owner.read_text().strip() == "0:0"  # as the image says
            assert os.stat(f"/proc/{pid}/root/bin/busybox").st_uid == host  # from the host
            hosts.append(host)
            slots.append(slot)
        assert abs(hosts[0] - hosts[1]) >= userns.SIZE
        for host in hosts:
            with pytest.raises(KeyError):
                pwd.getpwuid(host)
            for line in pathlib.Path("/etc/subuid").read_text().splitlines() \
                    if os.path.exists("/etc/subuid") else ():
                _, start, count = line.split(":")
                assert not (int(start) <= host < int(start) + int(count)
                            or host <= int(start) < host + userns.SIZE), line
    finally:
        for cid in cids:
            rt.run("delete", "--force", cid, check=False)
    for cid, slot in zip(cids, slots):
        assert_clean(rt, cid)
        assert not os.path.ismount(f"{userns.REGISTRY}/{slot}/{userns.ROOTFS}")


# -- item 3: identity is runc root + id, and exec fails closed --------------------------------


def test_a_same_id_under_another_runc_root_never_touches_the_td(rt: Runtime) -> None:
    cid = f"dup-{RUN}"
    _sleeper(rt, cid)
    other = rt.tmp / "other-root"
    try:
        # Another containerd namespace deletes "its" container of the same id.
        res = subprocess.run([*rt.argv("delete", "--force", cid)[:2], str(other),
                              *rt.argv("delete", "--force", cid)[3:]], capture_output=True,
                             text=True, timeout=60)
        state = pathlib.Path(os.environ["ARCA_RUN"]) / "containers" / cid / "state.json"
        assert state.exists(), f"the TD's state was removed from another root: {res.stderr}"
        res = rt.run("exec", cid, "sh", "-c", "cat /run/arca/secrets/*", check=False)
        assert res.returncode != 0 and "allow_exec is not set" in res.stderr, res.stderr
        # State gone (by accident or otherwise): exec fails closed, naming why.
        import shutil

        shutil.copytree(state.parent, rt.tmp / "saved-state", dirs_exist_ok=True)
        shutil.rmtree(state.parent)
        res = rt.run("exec", cid, "sh", "-c", "echo exec-ran", check=False)
        assert res.returncode != 0 and "exec-ran" not in res.stdout, res.stdout
        assert "Arca has no state for it" in res.stderr, res.stderr
        shutil.copytree(rt.tmp / "saved-state", state.parent)
    finally:
        rt.run("delete", "--force", cid, check=False)
    assert_clean(rt, cid)


def test_a_delete_without_the_sim_daemon_still_frees_the_tds_uid_range(rt: Runtime) -> None:
    """The C front end undoes a delete itself when no daemon of its sources answers; a TD's
    uid range and id-mapped root are left to Python's delete then (ADR 0048), not leaked."""
    from arca.host.simtee import client

    cid = f"nodaemon-{RUN}"
    _sleeper(rt, cid)
    client.stop()  # the next create starts it again
    rt.run("delete", "--force", cid)
    assert_clean(rt, cid)
