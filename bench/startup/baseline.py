"""Another checkout's ``arca-runtime`` front end, for before/after comparisons inside one run.

``--baseline DIR`` (``run.py``, ``attested.py``): DIR is another checkout of Arca (e.g. ``git
worktree add /tmp/base main``) with its own ``.venv`` (``make setup`` there). Its
``frontend.c`` is compiled here the way its ``scripts/setup.sh`` does (its Python, sources,
site-packages and code stamp), so its TEE calls are served by a sim daemon of *its* sources:
one daemon runs per run directory, so the baseline gets a run directory of its own — a
constructor sets ``ARCA_RUN`` before ``main`` (containerd hands both front ends the same
environment). ``ARCA_ROOT`` stays shared: one platform key (a KBS trusting it accepts both),
one guest runtime and rootfs digest cache. Both variants then go through the same containerd,
interleaved run by run with the current tree, so load on the machine hits both alike.
"""

from __future__ import annotations

import os
import pathlib
import subprocess


def build(tree: pathlib.Path, out_dir: pathlib.Path, run_dir: pathlib.Path) -> str:
    """The baseline front end (a path), its daemon on ``run_dir``."""
    tree = tree.resolve()
    py = tree / ".venv" / "bin" / "python3"
    if not py.exists():
        raise SystemExit(f"--baseline {tree}: no .venv there (run make setup in it)")
    site = subprocess.run([str(py), "-I", "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stamp = subprocess.run([str(py), "-c", "from arca.host.runtime.fastcreate import code_stamp;"
                            " print(code_stamp())"], cwd=tree / "src", capture_output=True,
                           text=True, check=True).stdout.strip()
    out_dir.mkdir(parents=True, exist_ok=True)
    header = out_dir / "baseline-run-dir.h"
    # Declared, not #include'd: the front end sets _GNU_SOURCE before its own includes.
    header.write_text('int setenv(const char *, const char *, int);\n'
                      '__attribute__((constructor)) static void '
                      f'arca_baseline_run_dir(void) {{ setenv("ARCA_RUN", "{run_dir}", 1); }}\n')
    out = out_dir / "arca-runtime-baseline"
    subprocess.run(["gcc", "-O2", f'-DARCA_PYTHON="{py}"', f'-DARCA_SRC="{tree / "src"}"',
                    f'-DARCA_SITE="{site}"', f'-DARCA_STAMP="{stamp}"', "-include", str(header),
                    "-o", str(out), str(tree / "src/arca/host/runtime/frontend.c")], check=True)
    return str(out)


def stop(tree: pathlib.Path, run_dir: pathlib.Path) -> None:
    """Stop the baseline's sim daemon (started by its first create)."""
    py = tree.resolve() / ".venv" / "bin" / "python3"
    subprocess.run([str(py), "-c", "from arca.host.simtee import client; client.stop()"],
                   env={**os.environ, "ARCA_RUN": str(run_dir)}, cwd="/", check=False)


def reference_values(tree: pathlib.Path, image: str, init_data: bytes,
                     env: dict[str, str]) -> dict[str, list[str]]:
    """The grants ``arca policy generate`` of the baseline computes for ``image`` (its guest
    runtime may differ, and so its measurement): a broker's policy must admit both trees."""
    py = tree.resolve() / ".venv" / "bin" / "python3"
    code = ("import json, sys; from arca.host.policygen import generate; "
            "g = generate(sys.argv[1], init_data=sys.stdin.buffer.read()); "
            "print(json.dumps(g.reference_values()))")
    import json

    out = subprocess.run([str(py), "-c", code, image], input=init_data, capture_output=True,
                         env={**os.environ, **env}, cwd="/", check=True).stdout
    return dict(json.loads(out))
