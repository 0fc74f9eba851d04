"""Differential property test: for random multi-layer images (files, directories, modes,
symlinks, hard links within and across layers, whiteouts, opaque directories, type changes),
the overlay view of Arca's per-layer unpack equals ``umoci unpack`` of the same image."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arca.host.images import ImageStore, load_layout
from arca.host.measure import mounted_rootfs
from tests.support.imagetrees import tree_listing, write_layout

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("umoci") or os.geteuid() != 0,
                       reason="needs umoci and root"),
]

NAMES = ["a", "b", "c", "d"]
MODES = [0o755, 0o700, 0o750, 0o1777]
FMODES = [0o644, 0o600, 0o755, 0o4755]


class Model:
    """The flat filesystem an image's layers produce, and the tar entries of each layer."""

    def __init__(self) -> None:
        self.state: dict[str, tuple[str, object]] = {}  # path -> (kind, mode|target)

    def dirs(self) -> list[str]:
        return [""] + sorted(p for p, (k, _) in self.state.items() if k == "dir")

    def remove_tree(self, path: str) -> None:
        for p in [p for p in self.state if p == path or p.startswith(path + "/")]:
            del self.state[p]


def build_layers(draw: st.DrawFn) -> list[list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]]:
    model = Model()
    layers = []
    for _layer in range(draw(st.integers(1, 3))):
        entries: list[tuple[tarfile.TarInfo, bytes]] = []
        before = dict(model.state)
        touched: set[str] = set()
        for _op in range(draw(st.integers(1, 6))):
            op = draw(st.sampled_from(["file", "dir", "chmod", "delete", "opaque", "link",
                                       "sym"]))
            parent = draw(st.sampled_from(model.dirs()))
            path = (parent + "/" if parent else "") + draw(st.sampled_from(NAMES))
            ti = tarfile.TarInfo(path)
            ti.mtime = 1_700_000_000
            if op == "file":
                if path in model.state and model.state[path][0] == "dir" and any(
                        t.startswith(path + "/") for t in touched):
                    continue
                data = draw(st.binary(max_size=16))
                ti.size, ti.mode = len(data), draw(st.sampled_from(FMODES))
                model.remove_tree(path)
                model.state[path] = ("file", ti.mode)
                entries.append((ti, data))
            elif op in ("dir", "chmod"):
                if op == "chmod":
                    cands = [d for d in model.dirs() if d]
                    if not cands:
                        continue
                    path = draw(st.sampled_from(cands))
                    ti = tarfile.TarInfo(path)
                if path in model.state and model.state[path][0] != "dir":
                    model.remove_tree(path)
                ti.type, ti.mode = tarfile.DIRTYPE, draw(st.sampled_from(MODES))
                model.state[path] = ("dir", ti.mode)
                entries.append((ti, b""))
            elif op == "delete":
                # whiteouts apply to lower layers only: pick something untouched here
                cands = sorted(p for p in before if p in model.state and not any(
                    p == t or p.startswith(t + "/") or t.startswith(p + "/") for t in touched))
                if not cands:
                    continue
                path = draw(st.sampled_from(cands))
                par, _, base = path.rpartition("/")
                wh = tarfile.TarInfo((par + "/" if par else "") + ".wh." + base)
                wh.mtime = 1_700_000_000
                model.remove_tree(path)
                entries.append((wh, b""))
            elif op == "opaque":
                cands = sorted(p for p in before if model.state.get(p, ("",))[0] == "dir"
                               and not any(t.startswith(p + "/") or t == p for t in touched))
                if not cands:
                    continue
                path = draw(st.sampled_from(cands))
                ti = tarfile.TarInfo(path)
                ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, model.state[path][1], 1_700_000_000
                opq = tarfile.TarInfo(path + "/.wh..wh..opq")
                opq.mtime = 1_700_000_000
                for p in [p for p in model.state if p.startswith(path + "/")]:
                    del model.state[p]
                entries += [(ti, b""), (opq, b"")]
            elif op == "link":
                files = sorted(p for p, (k, _) in model.state.items() if k == "file")
                if not files or path in model.state:
                    continue
                target = draw(st.sampled_from(files))
                ti.type, ti.linkname = tarfile.LNKTYPE, target
                model.state[path] = model.state[target]
                entries.append((ti, b""))
            elif op == "sym":
                if path in model.state:
                    continue
                ti.type = tarfile.SYMTYPE
                ti.linkname = draw(st.sampled_from(["a", "/a/b", "../c", "b/../a", "."]))
                if ti.linkname.startswith("../") and "/" not in path:
                    ti.linkname = ti.linkname[3:]
                model.state[path] = ("sym", ti.linkname)
                entries.append((ti, b""))
            touched.add(path)
        layers.append(entries)
    return layers  # type: ignore[return-value]


layers_strategy = st.composite(build_layers)()


def to_tar(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return buf.getvalue()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(layers_strategy)
def test_overlay_of_layers_equals_umoci_unpack(tmp_path_factory: pytest.TempPathFactory,
                                               layers: list) -> None:  # type: ignore[type-arg]
    tmp = tmp_path_factory.mktemp("diff")
    summary = [[(ti.name, ti.type.decode(), oct(ti.mode), ti.linkname) for ti, _ in layer]
               for layer in layers]
    write_layout(tmp / "layout", [to_tar(e) for e in layers], tag="t")
    res = subprocess.run(["umoci", "unpack", "--image", f"{tmp / 'layout'}:t",
                          str(tmp / "bundle")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    store = ImageStore(tmp / "store")
    rec = load_layout(store, tmp / "layout", tag="t")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARCA_RUN", str(tmp / "run"))
        with mounted_rootfs(store, rec) as rootfs:
            ours = tree_listing(rootfs)
    theirs = tree_listing(tmp / "bundle" / "rootfs")
    assert ours == theirs, f"layers: {summary}"
    shutil.rmtree(tmp, ignore_errors=True)
