"""``arca-runtime``'s C front end (``src/arca/host/runtime/frontend.c``): the calls it answers
itself go to runc without Python, and every other call reaches the Python implementation.

Two binaries: the installed one (``.venv/bin/arca-runtime``, built by ``scripts/setup.sh``), and
a copy of the same source compiled here with a Python that does not exist, so any call the
front end does not answer itself fails with "cannot execute": that proves which path ran.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
SOURCE = REPO / "src" / "arca" / "host" / "runtime" / "frontend.c"
RUNTIME = pathlib.Path(sys.executable).parent / "arca-runtime"


@pytest.fixture(scope="module")
def no_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (scripts/setup.sh installs it)")
    out = tmp_path_factory.mktemp("frontend") / "arca-runtime"
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", '-DARCA_PYTHON="/nonexistent/py"',
                    '-DARCA_SRC="/nonexistent/src"', '-DARCA_SITE="/nonexistent/site"', "-o",
                    str(out), str(SOURCE)], check=True)
    return str(out)


@pytest.fixture
def env(tmp_path: pathlib.Path) -> dict[str, str]:
    fake = tmp_path / "fake-runc"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/calls\n')
    fake.chmod(0o755)
    values = {k: v for k, v in os.environ.items() if not k.startswith("ARCA_")}
    values.update({"ARCA_RUNC": str(fake), "ARCA_RUN": str(tmp_path / "run"),
                   "ARCA_ROOT": str(tmp_path / "root"),
                   "ARCA_RUNTIME_CONFIG": str(tmp_path / "absent.json")})
    return values


def run(binary: str, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, *argv], capture_output=True, text=True, env=env, timeout=30)


def bundle(d: pathlib.Path, annotations: dict[str, str] | None = None, raw: str | None = None
           ) -> str:
    d.mkdir(parents=True, exist_ok=True)
    cfg = {"root": {"path": "rootfs"}, "process": {"args": ["sh"]}}
    if annotations is not None:
        cfg["annotations"] = annotations
    (d / "config.json").write_text(raw if raw is not None else json.dumps(cfg))
    return str(d)


def test_runtime_binary_is_the_front_end() -> None:
    if not RUNTIME.exists():
        pytest.skip("no installed arca-runtime")
    assert RUNTIME.read_bytes()[:4] == b"\x7fELF", "scripts/setup.sh did not install it"


@pytest.mark.parametrize("argv", [
    ["--root", "/r", "--log", "/l", "--log-format", "json", "start", "c1"],
    ["--root=/r", "-log", "/l", "kill", "--all", "c1", "9"],
    ["state", "c1"], ["ps", "c1"], ["features"], ["pause", "c1"], ["resume", "c1"],
    ["--root", "/r", "delete", "--force", "c1"], ["checkpoint", "c1"], ["restore", "c1"],
    ["--root", "create", "start", "c1"],  # "create" is --root's value here
])
def test_answered_without_python(no_python: str, env: dict[str, str], tmp_path: pathlib.Path,
                                 argv: list[str]) -> None:
    res = run(no_python, argv, env)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "calls").read_text() == " ".join(argv) + "\n"


def test_plain_create_without_python(no_python: str, env: dict[str, str],
                                     tmp_path: pathlib.Path) -> None:
    cfg = {"root": {"path": "rootfs"}, "process": {"args": ["sh"]}, "annotations": {"a": "b"}}
    b = tmp_path / "b"
    b.mkdir()
    (b / "config.json").write_text(json.dumps(cfg))
    for argv in (["create", "--bundle", str(b), "c1"], ["create", f"--bundle={b}", "c2"],
                 ["run", "-b", str(b), "c3"]):
        assert run(no_python, argv, env).returncode == 0
    assert len((tmp_path / "calls").read_text().splitlines()) == 3


@pytest.mark.parametrize("case", ["tee", "escape", "default-tee", "config-file", "state",
                                  "no-bundle", "exec", "version", "empty"])
def test_everything_else_goes_to_python(no_python: str, env: dict[str, str],
                                        tmp_path: pathlib.Path, case: str) -> None:
    argv = ["create", "--bundle", bundle(tmp_path / "b", {}), "c1"]
    if case == "tee":
        argv[2] = bundle(tmp_path / "b", {"io.arca.tee": "sim"})
    elif case == "escape":  # "io.arca.tee" spelled with a JSON escape
        argv[2] = bundle(tmp_path / "b", raw='{"annotations": {"io\\u002earca.tee": "sim"}}')
    elif case == "default-tee":
        env["ARCA_TEE"] = "sim"
    elif case == "config-file":
        pathlib.Path(env["ARCA_RUNTIME_CONFIG"]).write_text("{}")
        argv = ["state", "c1"]
    elif case == "state":
        state = pathlib.Path(env["ARCA_RUN"]) / "containers" / "c1" / "state.json"
        state.parent.mkdir(parents=True)
        state.write_text("{}")
        argv = ["delete", "c1"]
    elif case == "no-bundle":
        argv[2] = str(tmp_path / "missing")
    elif case == "exec":
        argv = ["exec", "c1", "sh"]
    elif case == "version":
        argv = ["--version"]
    else:
        argv = []
    res = run(no_python, argv, env)
    assert res.returncode == 1 and "cannot execute /nonexistent/py" in res.stderr
    assert not (tmp_path / "calls").exists()


def test_installed_front_end_agrees_with_python(env: dict[str, str],
                                                tmp_path: pathlib.Path) -> None:
    """The same calls through the installed binary and through ``python -m``: same runc
    argv, same refusals."""
    if not RUNTIME.exists() or RUNTIME.read_bytes()[:4] != b"\x7fELF":
        pytest.skip("no installed front end")
    plain = bundle(tmp_path / "plain", {})
    tee = bundle(tmp_path / "tee", {"io.arca.tee": "nope"})
    cases = [["state", "c1"], ["--root", "/r", "kill", "c1", "9"], ["delete", "c1"],
             ["create", "--bundle", plain, "c1"], ["create", "--bundle", tee, "c1"],
             ["checkpoint", "c1"]]
    py = [sys.executable, "-c", "import sys; from arca.host.runtime.cli import main; "
          "sys.exit(main())"]
    for argv in cases:
        calls = tmp_path / "calls"
        calls.unlink(missing_ok=True)
        a = run(str(RUNTIME), argv, env)
        got_a = calls.read_text() if calls.exists() else ""
        calls.unlink(missing_ok=True)
        b = subprocess.run([*py, *argv], capture_output=True, text=True, env=env, timeout=30)
        got_b = calls.read_text() if calls.exists() else ""
        assert (a.returncode, got_a, a.stderr) == (b.returncode, got_b, b.stderr), argv


def _tee_state(env: dict[str, str], cid: str, status: str = "created") -> pathlib.Path:
    from arca.host.runtime.state import ContainerState

    run = pathlib.Path(env["ARCA_RUN"])
    (run / "containers" / cid).mkdir(parents=True)
    (run / "containers" / cid / "state.json").write_text(
        json.dumps(ContainerState(cid, "sim", "/b", status, "ab").to_json()))
    (run / "containers" / cid / "config.orig.json").write_text("{}")
    (run / "td" / cid).mkdir(parents=True)
    (run / "td" / cid / "descriptor.json").write_text("{}")
    (run / "simtee" / "tds").mkdir(parents=True)
    (run / "simtee" / "tds" / f"{cid}.json").write_text("{}")
    return run


PY = [sys.executable, "-c", "import sys; from arca.host.runtime.cli import main; "
      "sys.exit(main())"]


@pytest.mark.parametrize("argv", [["delete", "--force", "t1"], ["delete", "t1"],
                                  ["start", "t1"], ["state", "t1"]])
def test_tee_calls_are_handed_over(no_python: str, env: dict[str, str], tmp_path: pathlib.Path,
                                   argv: list[str]) -> None:
    """The front end keeps no state logic (ADR 0046): with no daemon to hand a TEE container's
    call to, Python gets it, and the front end has touched nothing."""
    run_fe = _tee_state(env, "t1")
    before = sorted(run_fe.rglob("*"))
    res = run(no_python, ["--root", str(tmp_path / "runc"), *argv], env)
    assert res.returncode == 1 and "cannot execute /nonexistent/py" in res.stderr
    assert not (tmp_path / "calls").exists() and sorted(run_fe.rglob("*")) == before


def test_tee_delete_in_python(env: dict[str, str], tmp_path: pathlib.Path) -> None:
    """runc delete, then the TD's registration (no daemon: its file) and Arca's files go."""
    run_fe = _tee_state(env, "t1")
    res = subprocess.run([*PY, "--root", str(tmp_path / "runc"), "delete", "--force", "t1"],
                         capture_output=True, text=True, env=env, timeout=30)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "calls").read_text() == f"--root {tmp_path / 'runc'} delete --force t1\n"
    assert not (run_fe / "containers" / "t1").exists() and not (run_fe / "td" / "t1").exists()
    assert not (run_fe / "simtee" / "tds" / "t1.json").exists()


def test_tee_delete_keeps_state_while_runc_keeps_the_container(
        env: dict[str, str], tmp_path: pathlib.Path) -> None:
    run = _tee_state(env, "t2")
    (tmp_path / "fake-runc").write_text("#!/bin/sh\nexit 7\n")
    (tmp_path / "runc" / "t2").mkdir(parents=True)
    (tmp_path / "runc" / "t2" / "state.json").write_text("{}")
    res = subprocess.run([*PY, "--root", str(tmp_path / "runc"), "delete", "t2"],
                         capture_output=True, text=True, env=env, timeout=30)
    assert res.returncode == 7
    assert (run / "containers" / "t2" / "state.json").exists() and (run / "td" / "t2").exists()


@pytest.mark.parametrize("status", ["creating"])
def test_half_created_tee_delete_goes_to_python(no_python: str, env: dict[str, str],
                                                tmp_path: pathlib.Path, status: str) -> None:
    _tee_state(env, "t3", status)
    res = run(no_python, ["delete", "t3"], env)
    assert res.returncode == 1 and "cannot execute /nonexistent/py" in res.stderr
    assert not (tmp_path / "calls").exists()


@pytest.mark.parametrize("ns", ["pid", "mnt", "ipc"])
def test_a_create_joining_a_namespace_goes_to_python(no_python: str, env: dict[str, str],
                                                     tmp_path: pathlib.Path, ns: str) -> None:
    """Issue 13 item 1: Python checks the joined namespace is not a TD's (``kubectl debug``);
    the C front end never passes such a create straight to runc, and Python agrees."""
    from arca.host.runtime.cli import _obviously_plain

    raw = json.dumps({"linux": {"namespaces": [{"type": "x", "path": f"/proc/1/ns/{ns}"}]}})
    b = bundle(tmp_path / "b", raw=raw)
    res = run(no_python, ["create", "--bundle", b, "c1"], env)
    assert res.returncode == 1 and "cannot execute /nonexistent/py" in res.stderr
    assert not (tmp_path / "calls").exists()
    assert not _obviously_plain(["--bundle", b])
    raw = json.dumps({"linux": {"namespaces": [{"type": "network", "path": "/proc/1/ns/net"}]}})
    assert run(no_python, ["create", "--bundle", bundle(tmp_path / "n", raw=raw), "c2"],
               env).returncode == 0


def test_arca_state_of_another_runc_root_is_not_this_containers(
        no_python: str, env: dict[str, str], tmp_path: pathlib.Path) -> None:
    """Issue 13 item 3: state recorded under one ``--root``; the same id under another root is
    runc's business (straight through, Arca's state untouched), in C and in Python."""
    from arca.host.runtime.cli import _has_arca_state

    run_dir = _tee_state(env, "c1")
    (run_dir / "containers" / "c1" / "runc-root").write_text("/run/containerd/runc/ns-a")
    for argv in (["--root", "/run/containerd/runc/ns-b", "delete", "--force", "c1"],
                 ["--root", "/run/containerd/runc/ns-b", "start", "c1"], ["state", "c1"]):
        res = run(no_python, argv, env)
        assert res.returncode == 0, (argv, res.stderr)
    assert len((tmp_path / "calls").read_text().splitlines()) == 3
    assert (run_dir / "containers" / "c1" / "state.json").exists()
    import os as _os

    _os.environ["ARCA_RUN"], old = str(run_dir), _os.environ.get("ARCA_RUN")
    try:
        assert _has_arca_state("c1", "/run/containerd/runc/ns-a")
        assert not _has_arca_state("c1", "/run/containerd/runc/ns-b")
        assert not _has_arca_state("c1", None)
    finally:
        if old is None:
            del _os.environ["ARCA_RUN"]
        else:
            _os.environ["ARCA_RUN"] = old
    # Under its own root the TEE delete is Arca's: handed over (no daemon here: to Python).
    res = run(no_python, ["--root", "/run/containerd/runc/ns-a", "delete", "c1"], env)
    assert res.returncode == 1 and "cannot execute /nonexistent/py" in res.stderr
    assert len((tmp_path / "calls").read_text().splitlines()) == 3
