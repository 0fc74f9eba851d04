"""Helpers for image store tests: compare unpacked trees, hand-craft OCI layouts, and a tiny
misbehaving registry (serves chosen bytes, can die in the middle of a blob)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import io
import json
import os
import pathlib
import stat
import tarfile
import threading
from collections.abc import Iterator


def tree_listing(root: pathlib.Path) -> dict[str, tuple[object, ...]]:
    """path -> (type+mode, uid, gid, sha256 of content | link target | rdev), root excluded."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    extra: object = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                extra = st.st_rdev
            else:
                extra = None
            out[rel] = (oct(st.st_mode), st.st_uid, st.st_gid, extra)
    return out


def tar_bytes(entries: list[tuple[str, str, bytes | str]]) -> bytes:
    """(name, kind file|dir|sym, data-or-target) -> uncompressed tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_700_000_000
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            elif kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, str(data)
                tf.addfile(ti)
            else:
                raw = data if isinstance(data, bytes) else data.encode()
                ti.size, ti.mode = len(raw), 0o755
                tf.addfile(ti, io.BytesIO(raw))
    return buf.getvalue()


def _blob(layout: pathlib.Path, data: bytes) -> dict[str, object]:
    d = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / d).write_bytes(data)
    return {"digest": f"sha256:{d}", "size": len(data)}


LAYER_TYPES = {"gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
               "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
               "": "application/vnd.oci.image.layer.v1.tar"}


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    return data


def write_layout(layout: pathlib.Path, layers: list[bytes], *, tag: str = "latest",
                 cmd: list[str] | None = None, compression: str = "gzip") -> dict[str, object]:
    """An OCI layout holding one image made of the given uncompressed layer tars (compressed
    here). Returns {"manifest": bytes, "config": bytes, "layers": [blob bytes]}."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    gz = [compress(t, compression) for t in layers]
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": cmd or ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers",
                   "diff_ids": [f"sha256:{hashlib.sha256(t).hexdigest()}" for t in layers]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   **_blob(layout, config)},
        "layers": [{"mediaType": LAYER_TYPES[compression], **_blob(layout, g)} for g in gz],
    }).encode()
    mdesc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             **_blob(layout, manifest),
             "annotations": {"org.opencontainers.image.ref.name": tag}}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [mdesc]}))
    return {"manifest": manifest, "config": config, "layers": gz}


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _TinyServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        if self.path == "/v2/":
            self._send(200, b"{}", "application/json")
            return
        parts = self.path.split("/")
        if len(parts) >= 5 and parts[-2] == "manifests":
            data = srv.manifests.get(parts[-1])
            if data is not None:
                self._send(200, data, "application/vnd.oci.image.manifest.v1+json")
                return
        if len(parts) >= 5 and parts[-2] == "blobs":
            data = srv.blobs.get(parts[-1])
            if data is not None:
                if parts[-1] in srv.die_in:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    if srv.die_once:
                        srv.die_in.discard(parts[-1])
                    return
                self._send(200, data, "application/octet-stream")
                return
        self._send(404, b'{"errors":[{"code":"NOT_FOUND"}]}', "application/json")

    def _send(self, code: int, data: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _TinyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    manifests: dict[str, bytes]
    blobs: dict[str, bytes]
    die_in: set[str]
    die_once: bool


@contextlib.contextmanager
def tiny_registry(manifests: dict[str, bytes], blobs: dict[str, bytes],
                  die_in: set[str] | None = None, die_once: bool = False) -> Iterator[str]:
    """A plain-HTTP registry on 127.0.0.1 serving exactly these bytes (no digest checks, so
    it can lie); blobs named in ``die_in`` are cut off halfway (only the first time with
    ``die_once``). Yields "127.0.0.1:PORT"."""
    srv = _TinyServer(("127.0.0.1", 0), _Handler)
    srv.manifests, srv.blobs, srv.die_in = manifests, blobs, set(die_in or ())
    srv.die_once = die_once
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def push_raw(registry_url: str, repo: str, ref: str, layout: pathlib.Path,
             manifest: bytes, media_type: str, blobs: list[bytes]) -> str:
    """Push ``blobs`` and ``manifest`` exactly as given (no conversion, unlike skopeo) to an
    anonymous registry with the distribution API. Returns the manifest digest."""
    import httpx

    del layout
    with httpx.Client(base_url=registry_url, timeout=30) as c:
        for data in blobs:
            d = "sha256:" + hashlib.sha256(data).hexdigest()
            r = c.post(f"/v2/{repo}/blobs/uploads/")
            r.raise_for_status()
            loc = r.headers["location"]
            sep = "&" if "?" in loc else "?"
            c.put(f"{loc}{sep}digest={d}", content=data,
                  headers={"Content-Type": "application/octet-stream"}).raise_for_status()
        c.put(f"/v2/{repo}/manifests/{ref}", content=manifest,
              headers={"Content-Type": media_type}).raise_for_status()
    return "sha256:" + hashlib.sha256(manifest).hexdigest()
