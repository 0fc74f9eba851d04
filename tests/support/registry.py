"""A real OCI distribution registry (Debian's ``docker-registry``) on 127.0.0.1 for tests."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    host: str  # "127.0.0.1:PORT"
    root: pathlib.Path
    proc: subprocess.Popen[bytes]
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"


def registry_available() -> bool:
    return shutil.which("docker-registry") is not None


@contextlib.contextmanager
def run_registry(
    workdir: pathlib.Path,
    *,
    htpasswd: pathlib.Path | None = None,
    tls_cert: pathlib.Path | None = None,
    tls_key: pathlib.Path | None = None,
) -> Iterator[Registry]:
    """Start ``docker-registry`` with filesystem storage under ``workdir``; stop it on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = [
        "version: 0.1",
        "log:",
        "  level: error",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {workdir / 'data'}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
    ]
    if tls_cert and tls_key:
        cfg += ["  tls:", f"    certificate: {tls_cert}", f"    key: {tls_key}"]
    if htpasswd:
        cfg += ["auth:", "  htpasswd:", "    realm: arca-test", f"    path: {htpasswd}"]
    conf = workdir / "config.yml"
    conf.write_text("\n".join(cfg) + "\n")
    log = open(workdir / "registry.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(conf)], stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "OTEL_TRACES_EXPORTER": "none"},
    )
    reg = Registry(f"127.0.0.1:{port}", workdir, proc, tls=bool(tls_cert))
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "docker-registry did not start: "
                        + (workdir / "registry.log").read_text(errors="replace")[-2000:]
                    ) from None
                time.sleep(0.05)
        if not tls_cert and not htpasswd:
            urllib.request.urlopen(f"{reg.url}/v2/", timeout=5).read()  # noqa: S310
        yield reg
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
