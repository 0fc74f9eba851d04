"""Support for tests that drive the ``arca`` CLI's container commands (``run``/``ps``/``rm``…)
as a user would: an isolated data directory, and everything it started gone afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

ARCA = str(pathlib.Path(sys.executable).parent / "arca")

NEEDS_ROOT_RUNC_UMOCI = pytest.mark.skipif(
    not (shutil.which("runc") and shutil.which("umoci")) or os.geteuid() != 0,
    reason="needs root, runc and umoci")


def arca(env: dict[str, str], *args: str, timeout: float = 120
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ARCA, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def on_terminal(env: dict[str, str], *args: str, timeout: float = 300
                ) -> tuple[int, str, str]:
    """Run ``arca ARGS`` with stderr on a pseudo-terminal (stdin ``/dev/null``): its exit
    code, stdout and what the terminal showed."""
    import pty
    import threading

    master, slave = pty.openpty()
    shown = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.run([ARCA, *args], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=slave, text=True, timeout=timeout)
    finally:
        os.close(slave)
        reader.join(10)
        os.close(master)
    return proc.returncode, proc.stdout, shown.decode(errors="replace")


@contextlib.contextmanager
def arca_env(tmp: pathlib.Path, prefix: str) -> Iterator[dict[str, str]]:
    """The environment for ``arca`` with ``ARCA_ROOT`` under ``tmp`` and a short ``ARCA_RUN``
    (unix socket paths stay short); afterwards every container is removed and the sim
    platform stopped."""
    short_run = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    env = {**os.environ, "ARCA_ROOT": str(tmp / "root"), "ARCA_RUN": short_run}
    try:
        yield env
    finally:
        for c in json.loads(arca(env, "ps", "-a", "--json").stdout or "[]"):
            arca(env, "rm", "-f", c["id"])
        subprocess.run([sys.executable, "-c", "from arca.host.simtee import client; "
                        "client.stop()"], env=env, capture_output=True)
        shutil.rmtree(short_run, ignore_errors=True)


@contextlib.contextmanager
def image_world(tmp_path_factory: pytest.TempPathFactory, name: str, prefix: str, *,
                layout: str = "layout", tag: str = "v1", **image: Any
                ) -> Iterator[tuple[pathlib.Path, dict[str, str], pathlib.Path]]:
    """A test module's world: a busybox image ``tag`` built at ``TMP/layout`` (``image``: more
    :func:`~tests.support.images.build_busybox_image` options) and an :func:`arca_env` under
    the module's ``TMP``; yields ``(layout path, env, TMP)``."""
    from tests.support.images import build_busybox_image

    tmp = tmp_path_factory.mktemp(name)
    path = tmp / layout
    build_busybox_image(path, tag, **image)
    with arca_env(tmp, prefix) as env:
        yield path, env, tmp
