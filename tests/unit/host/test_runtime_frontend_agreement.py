"""The C front end and the Python runtime route every call alike, and the sim daemon's answers
to the front end's hand-off are the in-process Python's (ADR 0012, ADR 0046).

Python's decision is :func:`arca.host.runtime.cli.decide` — the function ``cli.main`` itself
routes by, not a copy. The front end's is observed: it is built with a Python that does not
exist and a fake runc that records its argv, so each call ends in one of

* ``runc``: runc ran once with the caller's exact argv (pass-through);
* ``python``: the front end handed the call over — with no daemon running, to Python
  ("cannot execute /nonexistent/py").

``runc`` must mean Python says RUNC; ``python`` must mean Python says ARCA. The only allowed
differences are listed (``CONSERVATIVE``): the front end may hand over a call Python would pass
through, never the reverse. The front end has no third outcome: it keeps no state logic, so
a call it neither passes through nor hands over fails the test.

Then every handed-over call is made again twice from the same files: through the same front
end (with the code stamp) while a real sim daemon of these sources runs — it must answer, not
send the call to Python — and through Python in-process (``cli.main``). The two must end
alike: exit status, runc's calls, stdout, stderr and Arca's files left behind. A disagreement
fails the test; there is no silent fallback to hide it.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from arca.host.runtime import cli

REPO = pathlib.Path(__file__).resolve().parents[3]
SOURCE = REPO / "src" / "arca" / "host" / "runtime" / "frontend.c"

#: A pid no process has (above Linux's PID_MAX_LIMIT): an agent that is gone.
DEAD_PID = 4194305


def _build(out: pathlib.Path, stamp: str = "") -> str:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (scripts/setup.sh installs it)")
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", '-DARCA_PYTHON="/nonexistent/py"',
                    '-DARCA_SRC="/nonexistent/src"', '-DARCA_SITE="/nonexistent/site"',
                    f'-DARCA_STAMP="{stamp}"', "-o", str(out), str(SOURCE)], check=True)
    return str(out)


@pytest.fixture(scope="module")
def front_end(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _build(tmp_path_factory.mktemp("frontend") / "arca-runtime")


@pytest.fixture(scope="module")
def with_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, pathlib.Path]]:
    """The front end with the code stamp of these sources, and the run directory of a real sim
    daemon started from them (its control socket is root-only)."""
    if os.geteuid() != 0:
        pytest.skip("the sim daemon's control socket serves root only")
    from arca.host.runtime.fastcreate import code_stamp

    tmp = tmp_path_factory.mktemp("daemon")
    binary = _build(tmp / "arca-runtime", code_stamp())
    mp = pytest.MonkeyPatch()
    mp.setenv("ARCA_RUN", str(tmp / "run"))
    mp.setenv("ARCA_ROOT", str(tmp / "root"))
    from arca.host.simtee import client

    try:
        client.ensure_running()
        yield binary, tmp / "run"
    finally:
        client.stop()
        mp.undo()


def _bundle(d: pathlib.Path, annotations: dict[str, str] | None = None, raw: str | None = None,
            env: list[str] | None = None, join: str | None = None) -> str:
    d.mkdir(parents=True, exist_ok=True)
    cfg: dict[str, object] = {"root": {"path": "rootfs"}, "process": {"args": ["sh"],
                                                                      "env": env or []}}
    if annotations is not None:
        cfg["annotations"] = annotations
    if join is not None:  # joins namespace ``join`` (OCI type) of pid 4242 by path
        cfg["linux"] = {"namespaces": [{"type": join, "path": f"/proc/4242/ns/"
                                        f"{'mnt' if join == 'mount' else join}"}]}
    (d / "config.json").write_text(raw if raw is not None else json.dumps(cfg))
    return str(d)


def _state(run: pathlib.Path, cid: str, status: str | None, *, go: bool = False,
           released: bool = False, runc_root: str | None = None) -> None:
    """Arca's files of one container in a given lifecycle state (arca.host.runtime.machine),
    created under ``runc_root`` (recorded beside the state; ``None``: none recorded)."""
    if status is None:
        return
    d = run / "containers" / cid
    d.mkdir(parents=True)
    if runc_root is not None:
        (d / "runc-root").write_text(runc_root)
    (d / "state.json").write_text(json.dumps({"id": cid, "tee": "sim", "bundle": "/b",
                                              "status": status, "measurement": "ab"}))
    (run / "td" / cid).mkdir(parents=True)
    if go:
        os.mkfifo(run / "td" / cid / "go", 0o600)
    if released:
        (d / "released").touch()


# (name, argv with {b} for a bundle dir, bundle kind, env additions, Arca state of "c1")
# bundle kinds: plain, tee, tee-none, sandbox, escape, env-text, missing, join-<OCI ns type>
# state: None | (status, go, released)
CASES: list[tuple[str, list[str], str, dict[str, str], tuple[str, bool, bool] | None]] = [
    ("kill", ["kill", "c1", "9"], "plain", {}, None),
    ("ps", ["--root", "/r", "ps", "c1"], "plain", {}, None),
    ("features", ["features"], "plain", {}, None),
    ("pause", ["pause", "c1"], "plain", {}, None),
    ("no command", [], "plain", {}, None),
    ("help", ["--help"], "plain", {}, None),
    ("version", ["--version"], "plain", {}, None),
    ("value of --root", ["--root", "create", "start", "c1"], "plain", {}, None),
    ("create plain", ["create", "--bundle", "{b}", "c1"], "plain", {}, None),
    ("create plain =", ["--log", "/l", "create", "--bundle={b}", "c1"], "plain", {}, None),
    ("run plain", ["run", "-b", "{b}", "c1"], "plain", {}, None),
    ("create tee", ["create", "--bundle", "{b}", "c1"], "tee", {}, None),
    ("run tee", ["run", "--bundle", "{b}", "c1"], "tee", {}, None),
    ("create, default tee", ["create", "--bundle", "{b}", "c1"], "plain", {"ARCA_TEE": "sim"},
     None),
    ("create, default none", ["create", "--bundle", "{b}", "c1"], "plain", {"ARCA_TEE": "none"},
     None),
    ("create tee=none", ["create", "--bundle", "{b}", "c1"], "tee-none", {}, None),
    ("create sandbox, default tee", ["create", "--bundle", "{b}", "c1"], "sandbox",
     {"ARCA_TEE": "sim"}, None),
    ("create escaped annotation", ["create", "--bundle", "{b}", "c1"], "escape", {}, None),
    ("create io.arca in env", ["create", "--bundle", "{b}", "c1"], "env-text", {}, None),
    ("create no bundle", ["create", "--bundle", "{b}", "c1"], "missing", {}, None),
    ("exec plain", ["exec", "c1", "sh"], "plain", {}, None),
    ("exec tee", ["exec", "c1", "sh"], "plain", {}, ("created", True, True)),
    ("start plain", ["start", "c1"], "plain", {}, None),
    ("state plain", ["state", "c1"], "plain", {}, None),
    ("delete plain", ["delete", "c1"], "plain", {}, None),
    ("delete --force plain", ["--root", "/r", "delete", "--force", "c1"], "plain", {}, None),
    ("checkpoint plain", ["checkpoint", "c1"], "plain", {}, None),
    ("checkpoint tee", ["checkpoint", "c1"], "plain", {}, ("created", False, True)),
    ("start creating", ["start", "c1"], "plain", {}, ("creating", False, False)),
    ("start created", ["start", "c1"], "plain", {}, ("created", True, False)),
    ("start released", ["start", "c1"], "plain", {}, ("created", True, True)),
    ("start, no prestart", ["start", "c1"], "plain", {}, ("created", False, False)),
    ("start corrupt", ["start", "c1"], "plain", {}, ("bogus", True, False)),
    ("start, two ids", ["start", "c0", "c1"], "plain", {}, ("created", True, False)),
    ("state creating", ["state", "c1"], "plain", {}, ("creating", False, False)),
    ("state created", ["state", "c1"], "plain", {}, ("created", True, False)),
    ("state released", ["state", "c1"], "plain", {}, ("created", True, True)),
    ("state corrupt", ["state", "c1"], "plain", {}, ("bogus", True, False)),
    ("delete creating", ["delete", "c1"], "plain", {}, ("creating", False, False)),
    ("delete created", ["delete", "c1"], "plain", {}, ("created", True, False)),
    ("delete released", ["delete", "--force", "c1"], "plain", {}, ("created", True, True)),
    ("delete corrupt", ["delete", "c1"], "plain", {}, ("bogus", True, False)),
    ("delete, odd option", ["delete", "--now", "c1"], "plain", {}, ("created", True, True)),
    # Namespace joins (ADR 0020): a create joining a PID, mount or IPC namespace by path is
    # Python's (it refuses joining a TD's); other joins stay plain.
    ("create joins a pid namespace", ["create", "--bundle", "{b}", "c1"], "join-pid", {}, None),
    ("create joins a mount namespace", ["create", "--bundle", "{b}", "c1"], "join-mount", {},
     None),
    ("create joins an ipc namespace", ["create", "--bundle", "{b}", "c1"], "join-ipc", {}, None),
    ("run joins a pid namespace", ["run", "--bundle", "{b}", "c1"], "join-pid", {}, None),
    ("create joins a net namespace", ["create", "--bundle", "{b}", "c1"], "join-network", {},
     None),
    # State keyed by runc root (ADR 0020): rows named "... this root" record the --root of the
    # call beside the state, "... other root" another one (RECORDED_ROOT).
    ("start created, this root", ["start", "c1"], "plain", {}, ("created", True, False)),
    ("start created, other root", ["start", "c1"], "plain", {}, ("created", True, False)),
    ("start creating, other root", ["start", "c1"], "plain", {}, ("creating", False, False)),
    ("state created, this root", ["state", "c1"], "plain", {}, ("created", True, False)),
    ("state created, other root", ["state", "c1"], "plain", {}, ("created", True, False)),
    ("state corrupt, other root", ["state", "c1"], "plain", {}, ("bogus", True, False)),
    ("delete created, this root", ["delete", "c1"], "plain", {}, ("created", True, False)),
    ("delete created, other root", ["delete", "c1"], "plain", {}, ("created", True, False)),
    ("delete creating, other root", ["delete", "c1"], "plain", {}, ("creating", False, False)),
    ("checkpoint tee, this root", ["checkpoint", "c1"], "plain", {}, ("created", False, True)),
    ("checkpoint tee, other root", ["checkpoint", "c1"], "plain", {}, ("created", False, True)),
    ("restore tee, other root", ["restore", "c1"], "plain", {}, ("created", False, True)),
    ("exec tee, other root", ["exec", "c1", "sh"], "plain", {}, ("created", True, True)),
    ("delete created, default root recorded", ["delete", "c1"], "plain", {},
     ("created", True, False)),
]

#: Rows whose Arca state records the runc root it was created under: "this" (the call's
#: --root), "other" (another containerd namespace's), or "default" (/run/runc, runc's default,
#: while the call names another). Rows not listed record none (a create in flight: the
#: caller's).
RECORDED_ROOT = {name: ("this" if name.endswith("this root") else "other")
                 for name, *_ in CASES if name.endswith(("this root", "other root"))}
RECORDED_ROOT["delete created, default root recorded"] = "default"

#: Agreement alone would also hold if both sides ignored joins and roots: these rows' answer
#: is pinned (ADR 0020).
PINNED = {
    "create joins a pid namespace": cli.ARCA, "create joins a mount namespace": cli.ARCA,
    "create joins an ipc namespace": cli.ARCA, "run joins a pid namespace": cli.ARCA,
    "create joins a net namespace": cli.RUNC,
    "start created, this root": cli.ARCA, "start created, other root": cli.RUNC,
    "start creating, other root": cli.RUNC, "state created, this root": cli.ARCA,
    "state created, other root": cli.RUNC, "state corrupt, other root": cli.RUNC,
    "delete created, this root": cli.ARCA, "delete created, other root": cli.RUNC,
    "delete creating, other root": cli.RUNC, "checkpoint tee, this root": cli.ARCA,
    "checkpoint tee, other root": cli.RUNC, "restore tee, other root": cli.RUNC,
    "exec tee, other root": cli.ARCA,  # lifecycle refuses it if runc's state says TD
    "delete created, default root recorded": cli.RUNC,
}

#: Calls the front end hands over although Python passes them through, and why. Handed to
#: the daemon, they end in runc all the same (the second test checks it).
CONSERVATIVE = {
    "help": "no command: the front end leaves --version/--help/usage to Python",
    "no command": "no command: the front end leaves --version/--help/usage to Python",
    "create sandbox, default tee": "a non-none ARCA_TEE: the front end does not parse JSON, so "
                                   "it cannot see the sandbox annotation",
    "create tee=none": "any io.arca text: the front end does not parse JSON",
    "create io.arca in env": "any io.arca text: the front end does not parse JSON",
    "start, two ids": "odd arguments to start/state of a container with Arca state: Python "
                      "decides (it passes them to runc for runc's own message)",
    "state creating": "start/state of a container with Arca state: which state it is in is "
                      "Python's to read (ADR 0046)",
    "start released": "the same: a second start is runc's, Python tells",
    "start, no prestart": "the same: no go FIFO, runc's start, Python tells",
    "state released": "the same: runc's state unchanged once released, Python tells",
}

#: Calls the front end gives to Python without asking the daemon (no command to hand over).
NOT_HANDED_OVER = {"help", "no command", "version"}


def front_end_outcome(binary: str, argv: list[str], env: dict[str, str],
                      tmp: pathlib.Path) -> str:
    calls = tmp / "calls"
    calls.unlink(missing_ok=True)
    res = subprocess.run([binary, *argv], capture_output=True, text=True, env=env, timeout=30)
    got = calls.read_text().splitlines() if calls.exists() else []
    if "cannot execute /nonexistent/py" in res.stderr:
        assert not got, "the front end ran runc and then Python"
        return "python"
    assert res.returncode == 0 and got == [" ".join(argv)], \
        f"the front end neither passed {argv} to runc nor handed it over: {res}, runc {got}"
    return "runc"


def _setup(case: Case, tmp: pathlib.Path, run: pathlib.Path) -> tuple[list[str], dict[str, str]]:
    """The files of a row (bundle, Arca's state, runc's state) and its argv and environment."""
    name, argv_t, kind, extra_env, state = case
    fake = tmp / "fake-runc"
    # A runc whose `state` answer shows whether the call rewrote it.
    fake.write_text(f'#!/bin/sh\necho "$*" >> {tmp}/calls\n'
                    'case "$*" in *state*) echo \'{"status": "running"}\';; esac\n')
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCA_")}
    env.update({"ARCA_RUNC": str(fake), "ARCA_RUN": str(run), "ARCA_ROOT": str(tmp / "root"),
                "ARCA_RUNTIME_CONFIG": str(tmp / "absent.json"), **extra_env})
    b = tmp / "b"
    if kind == "plain":
        _bundle(b, {"a": "b"})
    elif kind == "tee":
        _bundle(b, {"io.arca.tee": "sim"})
    elif kind == "tee-none":
        _bundle(b, {"io.arca.tee": "none"})
    elif kind == "sandbox":
        _bundle(b, {"io.kubernetes.cri.container-type": "sandbox"})
    elif kind == "escape":
        _bundle(b, raw='{"annotations": {"io\\u002earca.tee": "sim"}}')
    elif kind == "env-text":
        _bundle(b, {}, env=["NOTE=io.arca is mentioned"])
    elif kind.startswith("join-"):
        _bundle(b, {"a": "b"}, join=kind[len("join-"):])
    argv = [a.replace("{b}", str(b)) for a in argv_t]
    runc_root = tmp / "runc"
    if state is not None:
        recorded = {"this": str(runc_root), "other": str(tmp / "other-runc"),
                    "default": "/run/runc"}.get(RECORDED_ROOT.get(name, ""))
        _state(run, "c1", state[0], go=state[1], released=state[2], runc_root=recorded)
        (runc_root / "c1").mkdir(parents=True, exist_ok=True)  # runc has it, its agent is gone
        (runc_root / "c1" / "state.json").write_text(json.dumps({"init_process_pid": DEAD_PID}))
        argv = ["--root", str(runc_root), *argv] if "--root" not in argv else argv
    return argv, env


Case = tuple[str, list[str], str, dict[str, str], tuple[str, bool, bool] | None]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_front_end_and_python_decide_alike(front_end: str, tmp_path: pathlib.Path,
                                           monkeypatch: pytest.MonkeyPatch, case: Case) -> None:
    name = case[0]
    argv, env = _setup(case, tmp_path, tmp_path / "run")
    for k, v in env.items():
        if k.startswith("ARCA_"):
            monkeypatch.setenv(k, v)
    if "ARCA_TEE" not in env:
        monkeypatch.delenv("ARCA_TEE", raising=False)
    python = cli.decide(argv)
    if name in PINNED:
        assert python == PINNED[name], f"{name}: Python says {python}, ADR 0020 {PINNED[name]}"
    c = front_end_outcome(front_end, argv, env, tmp_path)
    if name in CONSERVATIVE:
        assert (c, python) == ("python", cli.RUNC), \
            f"{name}: listed as conservative ({CONSERVATIVE[name]}), now {c}/{python}"
        return
    want = cli.RUNC if c == "runc" else cli.ARCA
    assert python == want, (f"{name}: the front end's decision is {c!r}, Python's is "
                            f"{python!r} for {argv}")


def _outcome(cmd: list[str], env: dict[str, str], tmp: pathlib.Path,
             run: pathlib.Path) -> tuple[int, list[str], str, str, list[str]]:
    """Exit status, runc's calls, stdout, stderr and Arca's files after one call."""
    calls = tmp / "calls"
    calls.unlink(missing_ok=True)
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    files = sorted(str(f.relative_to(run)) for d in ("containers", "td")
                   if (run / d).exists() for f in (run / d).rglob("*"))
    return (res.returncode, calls.read_text().splitlines() if calls.exists() else [],
            res.stdout, res.stderr, files)


def _fresh(tmp: pathlib.Path, run: pathlib.Path) -> None:
    for d in (tmp, run / "containers", run / "td"):
        shutil.rmtree(d, ignore_errors=True)
    tmp.mkdir(parents=True)


HANDED_OVER = [c for c in CASES if c[0] not in NOT_HANDED_OVER]


@pytest.mark.parametrize("case", HANDED_OVER, ids=[c[0] for c in HANDED_OVER])
def test_the_daemons_answers_are_the_in_process_pythons(
        front_end: str, with_daemon: tuple[str, pathlib.Path], tmp_path: pathlib.Path,
        case: Case) -> None:
    binary, run = with_daemon
    tmp = tmp_path / "row"
    _fresh(tmp, run)
    argv, env = _setup(case, tmp, run)
    if front_end_outcome(front_end, argv, env, tmp) == "runc":
        return  # passed through (the first test): nothing is handed over
    _fresh(tmp, run)
    argv, env = _setup(case, tmp, run)
    via_daemon = _outcome([binary, *argv], env, tmp, run)
    assert "cannot execute /nonexistent/py" not in via_daemon[3], \
        f"{case[0]}: the daemon sent the call to Python instead of answering it"
    _fresh(tmp, run)
    argv, env = _setup(case, tmp, run)
    py = [sys.executable, "-I", "-S", "-c", "import sys; sys.path += " + repr(sys.path) + "; "
          "from arca.host.runtime.cli import main; sys.exit(main())"]
    in_process = _outcome([*py, *argv], env, tmp, run)
    assert via_daemon == in_process, f"{case[0]}: daemon (left) and in-process Python differ"
    _fresh(tmp, run)


def test_every_conservative_case_is_in_the_table() -> None:
    assert set(CONSERVATIVE) <= {c[0] for c in CASES}
    assert set(RECORDED_ROOT) <= {c[0] for c in CASES if c[4] is not None}
    assert set(PINNED) <= {c[0] for c in CASES}
    assert NOT_HANDED_OVER <= set(CONSERVATIVE) | {"version"}

