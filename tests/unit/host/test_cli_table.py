"""``arca ps``/``inspect --format`` templates, fitted columns, relative times, and the lean
``version``/``images`` path against typer's commands (same output)."""

from __future__ import annotations

import datetime
import json
import os
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.cli import leanpath
from arca.cli.main import main
from arca.cli.table import ago, columns, epoch, render, render_each
from arca.wire.errors import InvalidInput


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime.datetime(1970, 1, 2),
                    max_value=datetime.datetime(2200, 1, 1)))
def test_epoch_matches_datetime(dt: datetime.datetime) -> None:
    dt = dt.replace(microsecond=0, tzinfo=datetime.UTC)
    assert epoch(dt.isoformat(timespec="milliseconds")) == dt.timestamp()


def test_ago() -> None:
    assert ago("2026-01-01T00:00:00.000+00:00", now=epoch("2026-01-01T00:00:05+00:00")) == \
        "5 seconds ago"
    assert ago("2026-01-01T00:00:00+00:00", now=epoch("2026-01-01T02:00:00+00:00")) == \
        "2 hours ago"
    assert ago("garbage") == "" and ago(None) == ""


def test_templates() -> None:
    obj = {"ID": "abc", "Labels": {"a": "b"}, "state": "running", "process": {"cwd": "/"},
           "exit_code": None}
    assert render("{{.ID}} {{ .Labels }} {{json .Labels}}", obj) == 'abc map[a:b] {"a": "b"}'
    assert render("{{.State}} {{.Process.Cwd}} {{.ExitCode}}", obj) == "running / <nil>"
    for bad, msg in (("{{.Nope}}", "no field 'Nope'"), ("{{.ID", "unclosed"),
                     ("{{printf .ID}}", "only")):
        with pytest.raises(InvalidInput, match=msg):
            render(bad, obj)
    out = render_each("table {{.ID}}\\t{{.State}}", [obj, {**obj, "ID": "a-much-longer-id"}])
    assert out.splitlines() == ["ID                 STATE", "abc                running",
                                "a-much-longer-id   running"]


def test_columns_fit_long_names() -> None:
    name = "registry.example.com:5000/team/a-very-long-repository-name/app:v1.2.3"
    out = columns([("NAME", "ID"), (name, "x")]).splitlines()
    assert out[1] == f"{name}   x" and out[0].index("ID") == out[1].rindex("x")


def test_lean_version_and_images_print_what_typer_prints(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ARCA_ROOT", str(tmp_path))
    (tmp_path / "images").mkdir()
    layer = {"digest": "sha256:" + "a" * 64, "diff_id": "sha256:" + "b" * 64,
             "chain_id": "sha256:" + "b" * 64, "media_type": "x", "size": 1234567}
    db = {"images": {n: {"name": n, "digest": "sha256:" + "1" * 64,
                         "config": "sha256:" + "2" * 64, "layers": [layer],
                         "created": "2026-01-01T00:00:00+00:00", "platform": "linux/amd64"}
                     for n in ("localhost/b:v1", "127.0.0.1:5000/a:v1")}}
    (tmp_path / "images" / "images.json").write_text(json.dumps(db))
    for argv in (["version"], ["images"], ["image", "ls"], ["image", "ls", "--json"],
                 ["images", "-q"], ["images", "-n", "--no-trunc"], ["images", "-a"],
                 ["images", "--format", "json"],
                 ["images", "--format", "table {{.Repository}}\t{{.Tag}}\t{{.Size}}"]):
        assert leanpath.dispatch(argv) == 0
        lean = capsys.readouterr().out
        monkeypatch.setenv("ARCA_CLI_FASTPATH", "0")
        with pytest.raises(SystemExit) as e:
            main(argv)
        monkeypatch.delenv("ARCA_CLI_FASTPATH")
        assert e.value.code == 0
        assert capsys.readouterr().out == lean
        if argv == ["image", "ls", "--json"]:
            assert [r["name"] for r in json.loads(lean)] == ["127.0.0.1:5000/a:v1",
                                                             "localhost/b:v1"]
        if argv == ["images"]:  # podman's columns; a missing config: the pull time
            assert lean.splitlines()[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID",
                                                    "CREATED", "SIZE"]
            assert lean.splitlines()[1].split()[:3] == ["127.0.0.1:5000/a", "v1", "2" * 12]
            assert lean.splitlines()[1].endswith("   1.23 MB")
        if argv == ["images", "-q"]:  # one id per image, as podman
            assert lean == "2" * 12 + "\n"
        if argv[1:] == ["-n", "--no-trunc"]:
            assert lean.splitlines()[0].split()[2] == "sha256:" + "2" * 64
        if argv[1:2] == ["--format"] and argv[2] == "json":
            pod = json.loads(lean)
            assert pod[0]["Names"] == ["127.0.0.1:5000/a:v1"] and pod[0]["Size"] == 1234567
            assert pod[0]["RepoDigests"] == ["127.0.0.1:5000/a@sha256:" + "1" * 64]
        if "table" in argv[-1]:
            assert lean.splitlines()[1].split() == ["127.0.0.1:5000/a", "v1", "1.23", "MB"]
    assert leanpath.dispatch(["images", "--help"]) is None
    assert leanpath.dispatch(["image", "ls", "--bogus"]) is None
    assert os.environ.get("ARCA_CLI_FASTPATH") is None


def test_pull_progress_totals_and_done_line(capsys: pytest.CaptureFixture[str]) -> None:
    from arca.host.images.progress import RichProgress, done_line

    assert done_line(5, 107_000_000, 2.0) == "done: 5 layers, 107.0 MB in 2.0 s (53.5 MB/s)"
    assert done_line(0, 0, 0.1).startswith("done: nothing to download")
    with RichProgress() as p:
        a = p.add("layer a", 3000)
        b = p.add("layer b", 2000)
        p.advance(a, 3000)
        p.advance(b, 2000)
        total = p._p.tasks[0]
        assert (total.description, total.total, total.completed) == ("total", 5000, 5000)
    err = capsys.readouterr().err
    assert "done: 2 layers, 0.0 MB in" in err


def test_plain_pull_progress_lines() -> None:
    """Not a terminal: whole lines, a running total when due, messages held until the first
    layer (a pull that downloads nothing says only its done line)."""
    import io

    from arca.host.images.progress import PlainProgress

    out = io.StringIO()
    prog = PlainProgress(out)
    prog.EVERY = 0.0
    with prog as p:
        p.message("pulling x")
        assert out.getvalue() == ""
        a = p.add("layer aaaaaaaaaaaa", 2_000_000)
        p.advance(a, 1_000_000)
        p.advance(a, 1_000_000)
    lines = out.getvalue().splitlines()
    assert lines[0] == "pulling x" and "layer aaaaaaaaaaaa: 2.0 MB done" in lines
    assert any(ln.startswith("pulled 1.0 / 2.0 MB (") for ln in lines), lines
    assert lines[-1].startswith("done: 1 layer, 2.0 MB in ")
    out = io.StringIO()
    with PlainProgress(out) as p:
        p.message("pulling y")
    assert out.getvalue() == "done: nothing to download (all layers already in the store)\n"
