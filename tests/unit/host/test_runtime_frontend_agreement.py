"""The C front end and the Python runtime make the same routing decision, call by call.

Python's decision is :func:`arca.host.runtime.cli.decide` — the function ``cli.main`` itself
routes by, not a copy. The front end's is observed: it is built with a Python that does not
exist and a fake runc that records its argv, so each call ends in one of

* ``runc``: runc ran once with the caller's exact argv (pass-through);
* ``python``: the front end tried to start Python ("cannot execute /nonexistent/py");
* ``own``: the front end did Arca's part itself (runc with other arguments, a ``state`` answer
  rewritten to ``created``, Arca's files removed, or a one-line refusal of its own).

``runc`` must mean Python says RUNC; ``python``/``own`` must mean Python says ARCA. The only
allowed differences are listed (``CONSERVATIVE``): the front end may send to Python a call
Python would pass through, never the reverse. A disagreement fails the test — there is no
silent fallback to hide it.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess

import pytest

from arca.host.runtime import cli

REPO = pathlib.Path(__file__).resolve().parents[3]
SOURCE = REPO / "src" / "arca" / "host" / "runtime" / "frontend.c"

#: A pid no process has (above Linux's PID_MAX_LIMIT): an agent that is gone.
DEAD_PID = 4194305


@pytest.fixture(scope="module")
def front_end(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (scripts/setup.sh installs it)")
    out = tmp_path_factory.mktemp("frontend") / "arca-runtime"
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", '-DARCA_PYTHON="/nonexistent/py"',
                    '-DARCA_SRC="/nonexistent/src"', '-DARCA_SITE="/nonexistent/site"', "-o",
                    str(out), str(SOURCE)], check=True)
    return str(out)


def _bundle(d: pathlib.Path, annotations: dict[str, str] | None = None, raw: str | None = None,
            env: list[str] | None = None) -> str:
    d.mkdir(parents=True, exist_ok=True)
    cfg: dict[str, object] = {"root": {"path": "rootfs"}, "process": {"args": ["sh"],
                                                                      "env": env or []}}
    if annotations is not None:
        cfg["annotations"] = annotations
    (d / "config.json").write_text(raw if raw is not None else json.dumps(cfg))
    return str(d)


def _state(run: pathlib.Path, cid: str, status: str | None, *, go: bool = False,
           released: bool = False) -> None:
    """Arca's files of one container in a given lifecycle state (arca.host.runtime.machine)."""
    if status is None:
        return
    d = run / "containers" / cid
    d.mkdir(parents=True)
    (d / "state.json").write_text(json.dumps({"id": cid, "tee": "sim", "bundle": "/b",
                                              "status": status, "measurement": "ab"}))
    (run / "td" / cid).mkdir(parents=True)
    if go:
        os.mkfifo(run / "td" / cid / "go", 0o600)
    if released:
        (d / "released").touch()


# (name, argv with {b} for a bundle dir, bundle kind, env additions, Arca state of "c1")
# bundle kinds: plain, tee, tee-none, sandbox, escape, env-text, missing
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
]

#: Calls the front end sends to Python although Python passes them through, and why.
CONSERVATIVE = {
    "help": "no command: the front end leaves --version/--help/usage to Python",
    "no command": "no command: the front end leaves --version/--help/usage to Python",
    "create sandbox, default tee": "a non-none ARCA_TEE: the front end does not parse JSON, so "
                                   "it cannot see the sandbox annotation",
    "create tee=none": "any io.arca text: the front end does not parse JSON",
    "create io.arca in env": "any io.arca text: the front end does not parse JSON",
    "start, two ids": "odd arguments to start/state of a container with Arca state: Python "
                      "decides (it passes them to runc for runc's own message)",
    "state creating": "Arca state that is not 'created' (creating, or corrupt): the front end "
                      "does not tell them apart",
}


def front_end_outcome(binary: str, argv: list[str], env: dict[str, str],
                      tmp: pathlib.Path, had_state: bool) -> str:
    calls = tmp / "calls"
    calls.unlink(missing_ok=True)
    res = subprocess.run([binary, *argv], capture_output=True, text=True, env=env, timeout=30)
    got = calls.read_text().splitlines() if calls.exists() else []
    if "cannot execute /nonexistent/py" in res.stderr:
        assert not got, "the front end ran runc and then Python"
        return "python"
    state_dir = pathlib.Path(env["ARCA_RUN"]) / "containers" / "c1"
    passed = (res.returncode == 0 and got == [" ".join(argv)]
              and '"status": "created"' not in res.stdout)
    if passed and (state_dir.exists() or not had_state):  # a delete may remove Arca's files
        return "runc"
    return "own"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_front_end_and_python_decide_alike(front_end: str, tmp_path: pathlib.Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           case: tuple[str, list[str], str, dict[str, str],
                                                       tuple[str, bool, bool] | None]) -> None:
    name, argv_t, kind, extra_env, state = case
    fake = tmp_path / "fake-runc"
    # A runc whose `state` answer shows whether the front end rewrote it.
    fake.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/calls\n'
                    'case "$*" in *state*) echo \'{"status": "running"}\';; esac\n')
    fake.chmod(0o755)
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCA_")}
    env.update({"ARCA_RUNC": str(fake), "ARCA_RUN": str(run), "ARCA_ROOT": str(tmp_path / "root"),
                "ARCA_RUNTIME_CONFIG": str(tmp_path / "absent.json"), **extra_env})
    b = tmp_path / "b"
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
    argv = [a.replace("{b}", str(b)) for a in argv_t]
    runc_root = tmp_path / "runc"
    if state is not None:
        _state(run, "c1", state[0], go=state[1], released=state[2])
        (runc_root / "c1").mkdir(parents=True)  # runc has it, its agent is gone
        (runc_root / "c1" / "state.json").write_text(json.dumps({"init_process_pid": DEAD_PID}))
        argv = ["--root", str(runc_root), *argv] if "--root" not in argv else argv

    for k, v in env.items():
        if k.startswith("ARCA_"):
            monkeypatch.setenv(k, v)
    for k in ("ARCA_TEE",):
        if k not in env:
            monkeypatch.delenv(k, raising=False)
    python = cli.decide(argv)
    c = front_end_outcome(front_end, argv, env, tmp_path, state is not None)
    if name in CONSERVATIVE:
        assert (c, python) == ("python", cli.RUNC), \
            f"{name}: listed as conservative ({CONSERVATIVE[name]}), now {c}/{python}"
        return
    want = cli.RUNC if c == "runc" else cli.ARCA
    assert python == want, (f"{name}: the front end's decision is {c!r}, Python's is "
                            f"{python!r} for {argv}")


def test_every_conservative_case_is_in_the_table() -> None:
    assert set(CONSERVATIVE) <= {c[0] for c in CASES}
