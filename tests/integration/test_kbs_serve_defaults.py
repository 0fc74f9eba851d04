"""``arca kbs serve`` as an operator meets it: a start-up line, an access log that never carries
a secret or a token, a data directory derived from ``--db``, help that says what is required."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time

import httpx
import pytest

from arca.kbs.config import default_data_dir, load
from arca.kbs.tokens import make_admin_token
from tests.integration.test_kbs_coco_guest import CocoGuest
from tests.support.kbs import admin_keypair, running_kbs

pytestmark = pytest.mark.integration


def test_startup_line_and_access_log_without_secrets(tmp_path):
    key, pub = admin_keypair(tmp_path)
    secret = b"TOP-SECRET-" + base64.b16encode(b"\x01\x02\x03")
    with running_kbs(tmp_path / "data", "--admin-public-key", str(pub),
                     "--insecure-allow-sample") as kbs:
        admin_token = make_admin_token(key)
        admin = {"Authorization": f"Bearer {admin_token}"}
        httpx.post(kbs.url + "/kbs/v0/resource/default/key/app", content=secret,
                   headers=admin).raise_for_status()
        httpx.post(kbs.url + "/kbs/v0/reference-values", headers=admin,
                   json={"name": "sample.svn", "values": ["1"]}).raise_for_status()
        guest = CocoGuest(kbs.url, "sample")
        nonce = str(guest.auth()["nonce"])
        digest = guest.runtime_data_digest(nonce)
        status, body = guest.attest(nonce, {"svn": "1",
                                            "report_data": base64.b64encode(digest).decode()})
        assert status == 200
        token = json.loads(body)["token"]
        cookie = guest.cookie.split("=", 1)[1]
        r = httpx.get(kbs.url + "/kbs/v0/resource/default/key/app?token=" + token,
                      headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        assert guest.request("GET", "/kbs/v0/resource/default/key/app")[0] == 200
        assert httpx.get(kbs.url + "/kbs/v0/resource/default/key/app", headers=admin
                         ).content == secret
        assert httpx.get(kbs.url + "/kbs/v0/nope").status_code == 404
        # access lines are written in batches, at most FLUSH_SECONDS after their request
        deadline = time.monotonic() + 15
        while '"GET /kbs/v0/nope' not in kbs.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    log = kbs.log.read_text()
    assert re.search(r"listening on http://127\.0\.0\.1:\d+, data .*TEEs accepted: sample[a-z, ]*; "
                     r"collateral not configured[^;]*; admin API on", log), log
    lines = [ln for ln in log.splitlines() if "arca.kbs.access" in ln]
    want = [('"POST /kbs/v0/resource/default/key/app HTTP/1.1" 200'),
            ('"POST /kbs/v0/auth HTTP/1.1" 200'), ('"POST /kbs/v0/attest HTTP/1.1" 200'),
            ('"GET /kbs/v0/resource/default/key/app HTTP/1.1" 200')]
    for w in want:
        assert any(w in ln for ln in lines), (w, lines)
    assert all(re.search(r'" \d{3} \d+\.\dms$', ln) for ln in lines), lines
    for needle in (secret.decode(), admin_token, token, token.split(".")[1], nonce, cookie,
                   base64.b64encode(secret).decode(), "Bearer", "?token"):
        assert needle not in log, needle


def test_no_access_log_flag(tmp_path):
    with running_kbs(tmp_path / "data", "--no-access-log") as kbs:
        httpx.get(kbs.url + "/healthz").raise_for_status()
    assert "arca.kbs.access" not in kbs.log.read_text()


def test_data_dir_defaults(tmp_path, monkeypatch):
    assert default_data_dir(f"sqlite:///{tmp_path}/k/kbs.db") == f"{tmp_path}/k"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    if not __import__("os").geteuid() == 0:
        assert default_data_dir(None) == str(tmp_path / "state" / "arca-kbs")
        assert load(None, {}, data_dir_default=True).data_dir == str(
            tmp_path / "state" / "arca-kbs")
    assert load(None, {"db": f"sqlite:///{tmp_path}/x/kbs.db"}).data_dir == f"{tmp_path}/x"


def test_serve_help_says_what_is_required():
    out = subprocess.run([sys.executable, "-m", "arca.cli.main", "kbs", "serve", "--help"],
                         capture_output=True, text=True, timeout=60, env={
                             "COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "Required unless --insecure-http" in text and "Trustee" in text
    assert "default: the directory of a sqlite:///FILE --db" in text
