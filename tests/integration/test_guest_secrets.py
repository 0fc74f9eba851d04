"""Attested secret delivery end to end: the agent in a busybox TD under real runc attests to a
real KBS process (trusting the in-test sim root) and receives its secret into tmpfs/env; a
wrong measurement is refused with the broker's reason; a KBS that is down fails the container
after the configured retries, naming the KBS."""

from __future__ import annotations

import os
import pathlib
import shutil
import time

import pytest
from cryptography.hazmat.primitives import serialization

from arca.host.guestruntime import ensure_guest_runtime
from tests.support.guest_simdevice import authority
from tests.support.guest_td import Td, busybox_rootfs

pytestmark = [pytest.mark.integration]

if os.geteuid() != 0 or shutil.which("runc") is None or not os.path.exists("/bin/busybox"):
    pytest.skip("needs root, runc and busybox-static", allow_module_level=True)

from tests.support.kbs import admin_keypair, running_kbs  # noqa: E402

SECRET = b"attested-secret-\x01-value"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    from arca.kbs.admin_client import AdminClient

    d = tmp_path_factory.mktemp("guest-kbs")
    _key, root, _platform = authority()
    (d / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    admin_key, pub = admin_keypair(d)
    gr = ensure_guest_runtime(d / "arca-root")
    rootfs = busybox_rootfs(d / "rootfs")
    with running_kbs(d / "kbs", "--trust-sim-root", str(d / "root.pem"),
                     "--admin-public-key", str(pub)) as kbs:
        admin = AdminClient(kbs.url, admin_key)
        admin.set_resource("default/key/app", SECRET)
        yield {"kbs": kbs, "admin": admin, "gr": gr, "rootfs": rootfs, "dir": d}
        admin.close()


def init_data(url: str, retries: int = 2) -> bytes:
    return f"""version = "0.1.0"
algorithm = "sha384"
[data]
kbs_url = "{url}"
resources = '''
[[resource]]
path = "default/key/app"
name = "app.key"
env = "APP_KEY"
'''
agent = '''
kbs_timeout = 2.0
kbs_retries = {retries}
kbs_backoff = 0.1
insecure_kbs = true
'''
""".encode()


WORKLOAD = ["/bin/sh", "-c", "cat /run/arca/secrets/app.key; echo; echo env=$APP_KEY; "
            "stat -c '%a %u' /run/arca/secrets/app.key; ls /run/arca/secrets"]


def make(env, tmp_path: pathlib.Path, url: str | None = None, **kw) -> Td:
    td = Td(tmp_path / "td", env["gr"], env["rootfs"], WORKLOAD, uid=1000,
            init_data=init_data(url or env["kbs"].url, **kw))
    td.share_host_network()
    return td


def scan_for(secret: bytes, *dirs: pathlib.Path) -> list[str]:
    hits = []
    for d in dirs:
        for p in d.rglob("*"):
            if p.is_file() and not p.is_socket() and secret in p.read_bytes():
                hits.append(str(p))
    return hits


def test_secret_reaches_the_workload_only_in_tmpfs(env, tmp_path: pathlib.Path) -> None:
    td = make(env, tmp_path)
    env["admin"].set_reference_value("sim.measurement", [td.descriptor.measurement().hex()])
    try:
        code, out, err = td.run()
    finally:
        td.close()
    assert code == 0, err
    text = SECRET.decode()
    assert out.splitlines() == [text, f"env={text}", "400 1000", "app.key"]
    # Nothing on host disk: bundle, device dir, runc state, KBS data stay free of plaintext.
    assert scan_for(SECRET, tmp_path, env["kbs"].data_dir) == []


def test_unknown_measurement_is_refused_with_the_brokers_reason(env,
                                                                tmp_path: pathlib.Path) -> None:
    td = make(env, tmp_path)
    env["admin"].set_reference_value("sim.measurement", ["00" * 48])
    try:
        code, out, err = td.run()
    finally:
        td.close()
    assert code == 126
    assert out == ""
    assert err.startswith("arca-agent: error:") and len(err.splitlines()) == 1
    assert "403 PolicyDeny" in err and SECRET.decode() not in err


def test_kbs_down_fails_after_retries_naming_the_kbs(env, tmp_path: pathlib.Path) -> None:
    from tests.support.registry import free_port

    url = f"http://127.0.0.1:{free_port()}"
    td = make(env, tmp_path, url=url, retries=2)
    start = time.monotonic()
    try:
        code, out, err = td.run()
    finally:
        td.close()
    assert code == 125 and out == ""
    assert url in err and "3 attempts" in err
    assert time.monotonic() - start >= 0.3  # backoff 0.1 + 0.2
