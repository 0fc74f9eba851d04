"""``--insecure`` must not leak credentials: an attacker who breaks TLS between ``arca image
pull`` and a real docker-registry (here a recording TCP relay in front of it) makes the client
fall back to plain HTTP; the client must then send neither Basic credentials nor a token bought
with them, and say why. Plain HTTP with credentials happens only when asked for by name
(``http://HOST/...``)."""

from __future__ import annotations

import base64
import contextlib
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from arca.host.images import ImageStore, pull
from arca.host.images.errors import RegistryError, RegistryUnavailable
from arca.host.images.registry import Credentials
from tests.support.images import build_busybox_image, empty_store, push
from tests.support.kbs_td import RecordingProxy, recording_proxy
from tests.support.registry import (
    NEEDS_REGISTRY_AND_ROOT,
    TokenServer,
    make_tls_cert,
    run_registry,
    write_htpasswd,
)

pytestmark = [
    pytest.mark.integration,
    NEEDS_REGISTRY_AND_ROOT,
]

ALICE = Credentials("alice", "s3cret")
ALICE_B64 = base64.b64encode(b"alice:s3cret")


def saw_secret(relay: RecordingProxy) -> bool:
    data = relay.sent()
    return ALICE_B64 in data or b"s3cret" in data or b"Bearer " in data


@contextlib.contextmanager
def relay_to(host: str) -> Iterator[RecordingProxy]:
    """A man in the middle: relays TCP to ``host`` and records what the client sent."""
    addr, port = host.rsplit(":", 1)
    with recording_proxy((addr, int(port))) as relay:
        yield relay


@pytest.fixture(scope="module")
def image_layout(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_busybox_image(tmp_path_factory.mktemp("img") / "layout", "v1")


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory, image_layout: str):  # type: ignore[no-untyped-def]
    """A plain-HTTP registry with Basic auth: what the client sees when TLS is broken."""
    base = tmp_path_factory.mktemp("reg")
    htpasswd = write_htpasswd(base / "htpasswd", "alice", "s3cret")
    with run_registry(base / "reg", htpasswd=htpasswd) as reg:
        push(image_layout, reg.host, "private/bb:v1", creds="alice:s3cret")
        yield reg


@pytest.fixture
def store(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> ImageStore:
    return empty_store(tmp_path, monkeypatch)


def test_basic_credentials_never_cross_a_tls_fallback(basic_registry, store: ImageStore) -> None:  # type: ignore[no-untyped-def]
    with relay_to(basic_registry.host) as mitm:
        with pytest.raises(RegistryError, match=r"credentials were not sent: .* answered only "
                                                r"over plain HTTP after HTTPS failed .*"
                                                rf"http://{mitm.host}/REPOSITORY"):
            pull(store, f"{mitm.host}/private/bb:v1", insecure=True, credentials=ALICE)
        assert mitm.sent(), "the relay saw the client's traffic"
        assert not saw_secret(mitm)
        assert store.list() == []
        # named as plain HTTP, the same pull sends them (and the relay sees them: the check
        # above is able to fail)
        rec = pull(store, f"http://{mitm.host}/private/bb:v1", insecure=True, credentials=ALICE)
        assert rec.name == f"{mitm.host}/private/bb:v1"
        assert saw_secret(mitm)


def test_plain_http_by_name_still_needs_insecure(basic_registry, store: ImageStore) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RegistryError, match="confirm with --insecure"):
        pull(store, f"http://{basic_registry.host}/private/bb:v1", credentials=ALICE)


def test_https_by_name_never_falls_back(basic_registry, store: ImageStore) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RegistryUnavailable, match="cannot connect over HTTPS"):
        pull(store, f"https://{basic_registry.host}/private/bb:v1", insecure=True,
             credentials=ALICE)


def test_cli_refusal_says_why_and_what_to_do(basic_registry, tmp_path: pathlib.Path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "ARCA_ROOT": str(tmp_path / "root"), "ARCA_RUN": str(tmp_path / "run")}
    arca = str(pathlib.Path(sys.executable).parent / "arca")
    with relay_to(basic_registry.host) as mitm:
        res = subprocess.run([arca, "image", "pull", "--insecure", "-q", "--creds",
                              "alice:s3cret", f"{mitm.host}/private/bb:v1"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert not saw_secret(mitm)
    assert res.returncode != 0
    assert "credentials were not sent" in res.stderr and "--ca-cert" in res.stderr
    assert "Traceback" not in res.stderr


def test_bearer_tokens_bought_with_credentials_never_cross_a_tls_fallback(
        tmp_path: pathlib.Path, image_layout: str, store: ImageStore) -> None:
    tokens = TokenServer(tmp_path / "tok", {"alice": "s3cret"})
    try:
        with run_registry(tmp_path / "reg", token_auth=tokens.registry_config()) as reg:
            push(image_layout, reg.host, "team/bb:v1", creds="alice:s3cret")
            tokens.requests.clear()
            with relay_to(reg.host) as mitm:
                with pytest.raises(RegistryError, match="credentials were not sent"):
                    pull(store, f"{mitm.host}/team/bb:v1", insecure=True, credentials=ALICE)
                # the token was asked for anonymously (it grants nothing), so no token bought
                # with alice's password crossed the relay, and the password did not either
                assert tokens.requests and all(r["user"] is None for r in tokens.requests)
                assert ALICE_B64 not in mitm.sent() and b"s3cret" not in mitm.sent()
                rec = pull(store, f"http://{mitm.host}/team/bb:v1", insecure=True,
                           credentials=ALICE)
                assert rec.layers
                assert any(r["user"] == "alice" for r in tokens.requests)
    finally:
        tokens.close()


def test_credentials_go_to_a_token_realm_only_over_https(
        tmp_path: pathlib.Path, image_layout: str, store: ImageStore) -> None:
    # the registry itself is HTTPS (verified), but names a plain-HTTP token service
    tokens = TokenServer(tmp_path / "tok", {"alice": "s3cret"})
    cert, key = make_tls_cert(tmp_path / "tls")
    try:
        with run_registry(tmp_path / "reg", token_auth=tokens.registry_config(),
                          tls_cert=cert, tls_key=key) as reg:
            push(image_layout, reg.host, "team/bb:v1", creds="alice:s3cret")
            tokens.requests.clear()
            with pytest.raises(RegistryError, match="not sent to the token service "
                                                    "'http://127.0.0.1:.*': it is not HTTPS"):
                pull(store, f"{reg.host}/team/bb:v1", ca_file=str(cert), credentials=ALICE)
            assert tokens.requests and all(r["user"] is None for r in tokens.requests)
    finally:
        tokens.close()
