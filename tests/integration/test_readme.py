"""README.md runs as written: its ``sh`` blocks, extracted and run by bash in order, as a new
user would paste them, against a real registry, KBS, sim platform and runc (and containerd
for the ``ctr`` block).

The test substitutes only what it must to stay isolated: the registry and KBS ports
(``127.0.0.1:5000``/``127.0.0.1:8080`` become ephemeral ones), ``ARCA_ROOT``/``ARCA_RUN`` (tmp
directories), and ``ctr``, which a shell function points at a private containerd. The
commands themselves are the README's. A block preceded by ``<!-- readme-test: skip (WHY) -->``
is not run (``make demo``/``make test`` are the test suite; ``arca verify`` needs hardware
evidence); lines starting with ``make`` are not run (the suite runs inside ``make setup``'s
result).
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys

import pytest

from tests.support.arca_run import NEEDS_ROOT_RUNC_UMOCI, arca_env
from tests.support.containerd import containerd_available, run_containerd
from tests.support.images import build_busybox_image, push
from tests.support.registry import free_port, registry_available, run_registry

pytestmark = [
    pytest.mark.integration,
    NEEDS_ROOT_RUNC_UMOCI,
    pytest.mark.skipif(not registry_available(), reason="needs docker-registry and skopeo"),
]

REPO = pathlib.Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SECRET = "my database password"
_BLOCK = re.compile(r"(?:<!-- readme-test: (?P<mark>[^>]*?) -->\n)?```sh\n(?P<body>.*?)```",
                    re.S)


def blocks() -> list[tuple[str, str]]:
    """(mark, body) of every ``sh`` block of the README, in order."""
    return [(m.group("mark") or "", m.group("body"))
            for m in _BLOCK.finditer(README.read_text())]


def test_readme_blocks_are_found() -> None:
    marks = [mark for mark, _ in blocks()]
    assert len(marks) >= 4 and marks.count("") >= 2, marks
    assert all(m == "" or m == "containerd" or m.startswith("skip (") for m in marks), marks


def _script(registry: str, kbs_port: int, ctr_fn: str | None) -> str:
    out = ["set -euo pipefail", f"cd {REPO}"]
    work_started = False
    for mark, body in blocks():
        if mark.startswith("skip"):
            continue
        if mark == "containerd":
            if ctr_fn is None:
                continue
            out.append(ctr_fn)
        lines = [ln for ln in body.splitlines() if not ln.startswith("make ")]
        text = "\n".join(lines).replace("127.0.0.1:5000", registry).replace(
            "127.0.0.1:8080", f"127.0.0.1:{kbs_port}")
        out.append(f"echo '### block {len(out)}'")
        out.append(text)
        if not work_started:
            # after the set-up block, which runs in the checkout: a fresh working directory
            out.append('cd "$README_WORK"')
            work_started = True
    return "\n".join(out) + "\n"


def test_readme_runs_as_written(tmp_path: pathlib.Path) -> None:
    layout = build_busybox_image(
        tmp_path / "layout", "v1",
        cmd=["sh", "-c", 'echo "secret: $(cat /run/arca/secrets/key)"; exec sleep 3600'])
    work = tmp_path / "work"
    work.mkdir()
    kbs_port = free_port()
    with run_registry(tmp_path / "registry") as reg, \
            arca_env(tmp_path, "arca-readme-") as env:
        push(layout, reg.host, "app:v1")
        # a user's shell: no venv on PATH until the README puts it there
        path = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                               if pathlib.Path(p).resolve() != pathlib.Path(sys.executable).parent)
        run_env = {**env, "PATH": path, "README_WORK": str(work)}
        run_env.pop("VIRTUAL_ENV", None)
        for k in ("ARCA_KBS_URL", "ARCA_KBS_ADMIN_KEY", "ARCA_KBS_CACERT"):
            run_env.pop(k, None)
        ctrd_cm = (run_containerd(tmp_path / "ctrd", env={"ARCA_ROOT": env["ARCA_ROOT"],
                                                          "ARCA_RUN": env["ARCA_RUN"]})
                   if containerd_available() else None)
        ctrd = ctrd_cm.__enter__() if ctrd_cm is not None else None
        try:
            ctr_fn = None
            if ctrd is not None:
                pre = f"command ctr --address {ctrd.address} --namespace {ctrd.namespace}"
                ctr_fn = ('ctr() { if [ "$1" = run ]; then shift; '
                          f'{pre} run --fifo-dir {ctrd.fifo_dir} --runc-root {ctrd.runc_root} '
                          f'"$@"; else {pre} "$@"; fi; }}')
            script = _script(reg.host, kbs_port, ctr_fn)
            # output to a file, not a pipe: the README's background KBS keeps its stdout open
            log = tmp_path / "readme.log"
            with open(log, "w") as out_f:
                proc = subprocess.Popen(["bash", "-c", script], env=run_env, cwd=work,
                                        stdin=subprocess.DEVNULL, stdout=out_f,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                pytest.fail("README commands hang:\n" + log.read_text(errors="replace")[-6000:])
            finally:
                # the README's background KBS (and anything else it left) goes with the group
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
            out = log.read_text(errors="replace")
        finally:
            if ctrd_cm is not None:
                ctrd_cm.__exit__(None, None, None)
    assert proc.returncode == 0, out[-6000:]
    assert "Traceback" not in out, out[-6000:]
    # the TD got its secret after attestation: through arca exec (and ctr's exec)
    assert out.count(SECRET) >= (2 if ctrd is not None else 1), out[-6000:]
    assert "hello from a TD" in out, out[-6000:]
    # arca images lists the pulled name, in podman's REPOSITORY and TAG columns
    assert re.search(rf"^{re.escape(reg.host)}/app +v1 +[0-9a-f]{{12}} ", out, re.M), out
    assert shutil.which("bash")
