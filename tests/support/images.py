"""Build small real OCI images (busybox-static based) with umoci, push them with skopeo."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest

from arca.host.images import ImageStore

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "echo", "cat", "ls", "sleep", "id", "env", "true", "false", "kill", "ps",
           "wc", "head", "stat", "mount", "pwd", "printf", "test", "[", "grep", "tr", "sed")


def run(*cmd: str) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr.strip()}")
    return res.stdout


def build_busybox_image(
    layout: pathlib.Path,
    tag: str = "latest",
    *,
    files: dict[str, bytes] | None = None,
    cmd: list[str] | None = None,
    entrypoint: list[str] | None = None,
    env: list[str] | None = None,
    workdir: str | None = None,
    user: str | None = None,
    scratch: pathlib.Path | None = None,
) -> str:
    """Create (or add ``tag`` to) an OCI layout at ``layout`` holding a busybox image.

    ``files`` maps absolute in-image paths to content, written in a second layer so images
    that differ only there share their first layer. Returns ``"<layout>:<tag>"``.
    """
    scratch = scratch or layout.parent / f".build-{tag}"
    if scratch.exists():
        shutil.rmtree(scratch)
    if not (layout / "index.json").exists():
        run("umoci", "init", "--layout", str(layout))
    ref = f"{layout}:{tag}"
    run("umoci", "new", "--image", ref)
    bundle = scratch / "bundle"
    run("umoci", "unpack", "--image", ref, str(bundle))
    rootfs = bundle / "rootfs"
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "run"):
        (rootfs / d).mkdir(exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "nobody:x:65534:65534::/:/bin/false\n"
        "app:x:1000:1000::/home/app:/bin/sh\n"
    )
    (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\napp:x:1000:\n")
    run("umoci", "repack", "--image", ref, str(bundle))
    if files:
        run("umoci", "unpack", "--image", ref, str(scratch / "b2"))
        r2 = scratch / "b2" / "rootfs"
        for path, content in files.items():
            target = r2 / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(0o755)
        run("umoci", "repack", "--image", ref, str(scratch / "b2"))
    config_args = ["umoci", "config", "--image", ref, "--os", "linux", "--architecture", "amd64"]
    config_args += ["--config.env", "PATH=/bin:/usr/bin"]
    for e in env or []:
        config_args += ["--config.env", e]
    if entrypoint is not None:
        for a in entrypoint:
            config_args += ["--config.entrypoint", a]
    for a in cmd if cmd is not None else ["/bin/sh"]:
        config_args += ["--config.cmd", a]
    if workdir:
        config_args += ["--config.workingdir", workdir]
    if user:
        config_args += ["--config.user", user]
    run(*config_args)
    run("umoci", "gc", "--layout", str(layout))
    shutil.rmtree(scratch, ignore_errors=True)
    return ref


def push(ref: str, registry_host: str, name: str, *, creds: str | None = None,
         tls_verify: bool = False) -> str:
    """Push an OCI layout reference to ``registry_host/name``; returns the pushed reference."""
    dest = f"{registry_host}/{name}"
    cmd = ["skopeo", "copy", "--quiet", f"--dest-tls-verify={'true' if tls_verify else 'false'}"]
    if creds:
        cmd += ["--dest-creds", creds]
    run(*cmd, f"oci:{ref}", f"docker://{dest}")
    return dest


def manifest_digest(ref: str) -> str:
    layout, _, tag = ref.rpartition(":")
    index = json.loads((pathlib.Path(layout) / "index.json").read_text())
    for m in index["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return str(m["digest"])
    raise KeyError(tag)


def empty_store(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> ImageStore:
    """An image store of its own, empty: ``ARCA_ROOT``/``ARCA_RUN`` under ``tmp_path``."""
    monkeypatch.setenv("ARCA_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("ARCA_RUN", str(tmp_path / "run"))
    return ImageStore()
