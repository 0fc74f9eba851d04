"""The agent is started at ``create`` and released at ``start`` (ADR 0003, docs/guest.md), with
real runc, through the C front end and through the Python path (a runtime config file sends
every call to Python): the agent does its work (evidence) before ``start`` while the workload
does not run, ``state`` says ``created``, ``start`` releases it once, failures are reported
after ``start``, ``delete``/``kill`` before ``start`` work, and ``kill -9`` at the new points
of ``create`` followed by ``delete --force`` leaves nothing."""

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
    kill_create_then_force_delete,
    sim_runtime,
)

pytestmark = [pytest.mark.integration, NEEDS_ROOT_AND_RUNC]

RUNTIME = pathlib.Path(sys.executable).parent / "arca-runtime"


@pytest.fixture(scope="module", params=["front-end", "python"])
def rt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    # runc through a wrapper that records which program ran the prestart's `runc run --detach`
    # (and can dawdle there).
    with sim_runtime(tmp_path_factory, f"prestart-{request.param}",
                     python_path=request.param == "python", runc_hook=lambda tmp: (
                         'for a in "$@"; do [ "$a" = --detach ] && {\n'
                         '  echo "run $(readlink /proc/$PPID/exe) $(cat /proc/$PPID/cmdline'
                         f' | tr "\\0" " ")" >> {tmp / "calls"}\n'
                         '  [ -n "$SLOW_START" ] && sleep "$SLOW_START"\n'
                         "}; done\n")) as runtime:
        runtime.calls = runtime.tmp / "calls"  # type: ignore[attr-defined]
        runtime.path = request.param  # type: ignore[attr-defined]
        yield runtime


class Created:
    """A TEE container created with its stdio in files and its agent waiting for start."""

    def __init__(self, rt: Runtime, cid: str, args: list[str],
                 annotations: dict[str, str] | None = None, host_network: bool = False) -> None:
        self.rt, self.cid = rt, cid
        b = rt.bundle(cid, args, annotations=annotations)
        if host_network:
            cfg = json.loads((b / "config.json").read_text())
            cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"]
                                          if n["type"] != "network"]
            (b / "config.json").write_text(json.dumps(cfg))
        self.out, self.err = rt.tmp / f"{cid}.out", rt.tmp / f"{cid}.err"
        pid_file = rt.tmp / f"{cid}.pid"
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            res = subprocess.run(rt.argv("create", "--bundle", str(b), "--pid-file",
                                         str(pid_file), cid),
                                 stdout=o, stderr=e, stdin=subprocess.DEVNULL, timeout=60)
        assert res.returncode == 0, self.err.read_text()
        self.pid = int(pid_file.read_text())

    def wait_until_agent_waits(self, timeout: float = 30) -> None:
        """Until the agent blocks reading ``go`` (done with everything before ``start``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                wchan = pathlib.Path(f"/proc/{self.pid}/wchan").read_text()
            except OSError:
                pytest.fail(f"agent of {self.cid} exited before start: {self.err.read_text()}")
            if wchan in ("pipe_read", "anon_pipe_read"):  # the name depends on the kernel
                return
            time.sleep(0.01)
        pytest.fail(f"agent of {self.cid} never waited for start")

    def wait_exit(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while os.path.exists(f"/proc/{self.pid}") and time.monotonic() < deadline:
            stat = pathlib.Path(f"/proc/{self.pid}/stat").read_text(errors="replace")
            if stat.rpartition(")")[2].split()[0] == "Z":
                break
            time.sleep(0.01)

    def status(self) -> str:
        return str(json.loads(self.rt.run("state", self.cid).stdout)["status"])


def _reports_for(cid: str) -> int:
    from arca.host.simtee import locations

    log = locations.log_file()
    return log.read_text().count(f"report for TD {cid} ") if log.exists() else 0


def test_agent_works_at_create_and_the_workload_waits_for_start(rt: Runtime) -> None:
    cid = f"ps-run-{rt.path}-{RUN}"  # type: ignore[attr-defined]
    c = Created(rt, cid, ["sh", "-c", "echo workload-ran"])
    c.wait_until_agent_waits()
    assert _reports_for(cid) == 1  # the agent already asked its TEE for evidence ...
    time.sleep(0.2)
    assert c.out.read_text() == "" and c.err.read_text() == ""  # ... the workload did not run
    assert c.status() == "created"
    state = json.loads(rt.run("state", cid).stdout)
    assert state["pid"] == c.pid and state["id"] == cid
    # The prestart ran `runc run --detach` from the runtime's create: the C front end or Python.
    start = rt.calls.read_text().splitlines()[-1]  # type: ignore[attr-defined]
    assert " create " in start and cid in start
    if rt.path == "front-end":  # type: ignore[attr-defined]
        assert start.split()[1] == str(RUNTIME.resolve())
    else:
        assert "python" in start.split()[1]
    rt.run("start", cid)
    c.wait_exit()
    assert c.out.read_text() == "workload-ran\n"
    assert c.status() == "stopped"
    again = rt.run("start", cid, check=False)  # runc's answer, as for any started container
    assert again.returncode != 0 and "cannot start" in again.stderr
    rt.run("delete", cid)
    assert_clean(rt, cid)


def test_second_start_of_a_running_container_is_refused_like_runc(rt: Runtime) -> None:
    cid = f"ps-twice-{rt.path}-{RUN}"  # type: ignore[attr-defined]
    c = Created(rt, cid, ["sleep", "30"])
    rt.run("start", cid)
    assert c.status() == "running"
    again = rt.run("start", cid, check=False)
    assert again.returncode != 0 and "already running" in again.stderr
    rt.run("delete", "--force", cid)
    assert_clean(rt, cid)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_a_failing_agent_reports_only_after_start(rt: Runtime) -> None:
    cid = f"ps-fail-{rt.path}-{RUN}"  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{_closed_port()}"
    init = (f'version = "0.1.0"\n[data]\nkbs_url = "{url}"\n'
            "agent = '{\"kbs_retries\": 0, \"insecure_kbs\": true}'\n").encode()
    c = Created(rt, cid, ["sh", "-c", "echo workload-ran"],
                {"io.arca.init-data": base64.b64encode(init).decode()})
    c.wait_until_agent_waits()  # it already failed: the KBS is down
    time.sleep(0.1)
    assert c.err.read_text() == "" and c.status() == "created"
    rt.run("start", cid)
    c.wait_exit()
    err = c.err.read_text()
    assert err.count("\n") == 1 and err.startswith("arca-agent: error: ") and url in err, err
    assert c.out.read_text() == ""
    rt.run("delete", cid)
    assert_clean(rt, cid)


def test_delete_before_start_kills_the_waiting_agent(rt: Runtime) -> None:
    cid = f"ps-del-{rt.path}-{RUN}"  # type: ignore[attr-defined]
    c = Created(rt, cid, ["sh", "-c", "echo workload-ran"])
    c.wait_until_agent_waits()
    rt.run("delete", cid)  # no --force: runc would refuse a running container
    assert c.out.read_text() == ""
    assert_clean(rt, cid)


def test_kill_before_start_ends_the_agent_and_start_then_fails(rt: Runtime) -> None:
    cid = f"ps-kill-{rt.path}-{RUN}"  # type: ignore[attr-defined]
    c = Created(rt, cid, ["sh", "-c", "echo workload-ran"])
    c.wait_until_agent_waits()
    rt.run("kill", cid)  # SIGTERM, runc's default: the agent (PID 1) has a handler
    c.wait_exit()
    assert c.status() == "stopped"
    res = rt.run("start", cid, check=False)
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert "has stopped" in res.stderr and cid in res.stderr
    assert c.out.read_text() == ""
    rt.run("delete", cid)
    assert_clean(rt, cid)


@pytest.mark.parametrize("delay", [0.03, 0.06, 0.1, 0.15, 0.25])
def test_kill_9_during_the_prestart_then_delete_force_leaves_nothing(
        rt: Runtime, monkeypatch: pytest.MonkeyPatch, delay: float) -> None:
    # The prestart's `runc run --detach` dawdles 0.2 s: the kill lands before, in or after it.
    monkeypatch.setenv("SLOW_START", "0.2")
    kill_create_then_force_delete(
        rt, f"ps-k9-{rt.path[0]}-{int(delay * 1000)}-{RUN}", delay)  # type: ignore[attr-defined]


def test_kill_9_while_runc_makes_the_container_then_delete_force_leaves_nothing(
        rt: Runtime) -> None:
    """The kill lands while create's runc child (step 6, ``run --detach``) is half-way
    through making the container (held in a ``createRuntime`` hook, which runs in the
    runtime's namespaces and is allowed for TDs): the orphan goes on after its parent died,
    so ``delete --force`` must wait for it and then remove what it made. A race of this kind
    once left a process behind in CI."""
    cid = f"ps-orphan-{rt.path}-{RUN}"  # type: ignore[attr-defined]
    b = rt.bundle(cid, ["sleep", "30"])
    marker = rt.tmp / f"{cid}.hook"
    cfg = json.loads((b / "config.json").read_text())
    cfg["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": [
        "sh", "-c", f"touch {marker}; sleep 1.5"]}]}
    (b / "config.json").write_text(json.dumps(cfg))
    proc = subprocess.Popen(rt.argv("create", "--bundle", str(b), cid),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "runc never got going"
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    rt.run("delete", "--force", cid)
    assert_clean(rt, cid)


def test_start_returns_once_the_agent_has_taken_go(rt: Runtime) -> None:
    """``start`` returns only after the agent took the ``go`` byte, which it reads once its
    broker work is done: a caller's exec right after ``start`` (``ctr run -d`` then ``ctr task
    exec``) must not come before the secrets. The broker here holds the agent's connection
    for 2 s and then drops it (the agent's error is then reported after ``start``)."""
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    closed: list[float] = []

    def stall() -> None:
        conn, _ = srv.accept()
        time.sleep(2)
        closed.append(time.monotonic())
        conn.close()

    threading.Thread(target=stall, daemon=True).start()
    url = f"http://127.0.0.1:{srv.getsockname()[1]}"
    init = (f'version = "0.1.0"\n[data]\nkbs_url = "{url}"\n'
            "agent = '{\"kbs_retries\": 0, \"insecure_kbs\": true}'\n").encode()
    cid = f"ps-taken-{rt.path}-{RUN}"  # type: ignore[attr-defined]
    # The host's network namespace, where the stalling broker listens on loopback.
    c = Created(rt, cid, ["sh", "-c", "echo workload-ran"],
                {"io.arca.init-data": base64.b64encode(init).decode()}, host_network=True)
    try:
        rt.run("start", cid)
        returned = time.monotonic()
        assert closed and returned >= closed[0], "start returned while the agent still attested"
        c.wait_exit()
        assert url in c.err.read_text() and c.out.read_text() == ""
    finally:
        srv.close()
        rt.run("delete", "--force", cid)
    assert_clean(rt, cid)
