"""Collateral sources: directory bundle, memory, chain, on-disk cache, and the Intel PCS v4
fetcher against a real local HTTP server (tests never go online)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from arca.errors import CollateralError
from arca.verifier.collateral import (
    CachingCollateral,
    ChainedCollateral,
    CollateralSource,
    DirectoryCollateral,
    IntelPcsCollateral,
    MemoryCollateral,
)
from arca.verifier.dcap import TdxVerifier
from tests.support.collateral_server import CollateralServer, collateral_server
from tests.support.dcap_factory import FMSPC, DcapBundle, DcapFactory


@pytest.fixture(scope="module")
def bundle() -> DcapBundle:
    return DcapFactory().build(tee="tdx")


def test_directory_serves_bundle_files(tmp_path: Path, bundle: DcapBundle) -> None:
    for name, data in bundle.collateral.items():
        (tmp_path / name).write_bytes(data)
    src = DirectoryCollateral(tmp_path)
    assert isinstance(src, CollateralSource)
    assert src.get("tcb_info.json") == bundle.collateral["tcb_info.json"]
    assert src.get("vcek.pem") is None
    v = TdxVerifier(src, trusted_root_spki_sha256=[bundle.root_fp])
    assert v.verify(bundle.quote, at=bundle.at).tcb_status == "UpToDate"
    # A replaced file is noticed (size/mtime change).
    (tmp_path / "ark.pem").write_bytes(b"one")
    assert src.get("ark.pem") == b"one"
    (tmp_path / "ark.pem").write_bytes(b"second")
    assert src.get("ark.pem") == b"second"


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "", ".hidden", "X.PEM"])
def test_directory_refuses_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        DirectoryCollateral(tmp_path).get(name)


def test_directory_must_exist(tmp_path: Path) -> None:
    with pytest.raises(CollateralError, match="does not exist"):
        DirectoryCollateral(tmp_path / "nope")


def test_chained_takes_first_available() -> None:
    src = ChainedCollateral(MemoryCollateral({"a.pem": b"1"}),
                            MemoryCollateral({"a.pem": b"2", "b.pem": b"3"}))
    assert (src.get("a.pem"), src.get("b.pem"), src.get("c.pem")) == (b"1", b"3", None)


class CountingSource:
    """Fake behind the CollateralSource I/O protocol: counts calls, can be made to fail."""

    def __init__(self, items: Mapping[str, bytes]) -> None:
        self.items = dict(items)
        self.calls = 0
        self.fail = False

    def get(self, name: str, context: Mapping[str, str] | None = None) -> bytes | None:
        self.calls += 1
        if self.fail:
            raise CollateralError("down")
        return self.items.get(name)


def test_cache_serves_fresh_entries_and_stale_on_failure(tmp_path: Path) -> None:
    inner = CountingSource({"tcb_info.json": b"v1"})
    cache = CachingCollateral(inner, tmp_path / "c", max_age=3600)
    ctx = {"tee": "tdx", "fmspc": FMSPC.hex()}
    assert cache.get("tcb_info.json", ctx) == b"v1"
    assert cache.get("tcb_info.json", ctx) == b"v1"
    assert inner.calls == 1
    # A new process (new instance) reads the on-disk entry.
    again = CachingCollateral(inner, tmp_path / "c", max_age=3600)
    assert again.get("tcb_info.json", ctx) == b"v1" and inner.calls == 1
    # Different context, different entry.
    assert again.get("tcb_info.json", {"tee": "sgx", "fmspc": FMSPC.hex()}) == b"v1"
    assert inner.calls == 2
    # Expired entries are refetched; when the source fails the stale copy is served.
    expired = CachingCollateral(inner, tmp_path / "c", max_age=0)
    inner.items["tcb_info.json"] = b"v2"
    assert expired.get("tcb_info.json", ctx) == b"v2"
    inner.fail = True
    assert expired.get("tcb_info.json", ctx) == b"v2"
    with pytest.raises(CollateralError):
        expired.get("qe_identity.json", ctx)
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.startswith(".tmp")]


@pytest.fixture()
def pcs(bundle: DcapBundle) -> Iterator[CollateralServer]:
    """Intel PCS for the bundle's TDX collateral; SGX's QE identity answers HTTP 500."""
    with collateral_server() as server:
        server.pcs("tdx", FMSPC.hex(), bundle.collateral)
        server.routes["/sgx/certification/v4/qe/identity"] = (b"oops", {})
        server.status["/sgx/certification/v4/qe/identity"] = 500
        yield server


def test_pcs_fetcher_full_verification_then_offline_from_cache(
        pcs: CollateralServer, bundle: DcapBundle, tmp_path: Path) -> None:
    online = IntelPcsCollateral(pcs.url, root_ca_crl_url=f"{pcs.url}/IntelSGXRootCA.der",
                                timeout=5)
    source = CachingCollateral(online, tmp_path / "cache")
    v = TdxVerifier(source, trusted_root_spki_sha256=[bundle.root_fp])
    assert v.verify(bundle.quote, at=bundle.at).tcb_status == "UpToDate"
    assert len(pcs.seen) == 4  # one request per document; issuer chains from headers
    # Later verifications (other verifier instance, PCS unreachable) use the on-disk cache.
    offline = CachingCollateral(IntelPcsCollateral("http://127.0.0.1:9", timeout=0.5,
                                                   root_ca_crl_url="http://127.0.0.1:9/x"),
                                tmp_path / "cache")
    v2 = TdxVerifier(offline, trusted_root_spki_sha256=[bundle.root_fp])
    assert v2.verify(bundle.quote, at=bundle.at).tcb_status == "UpToDate"


def test_pcs_errors_are_collateral_errors(pcs: CollateralServer) -> None:
    src = IntelPcsCollateral(pcs.url, timeout=5)
    with pytest.raises(CollateralError, match="HTTP 500"):
        src.get("qe_identity.json", {"tee": "sgx"})
    assert src.get("tcb_info.json", {"tee": "tdx", "fmspc": "ffffffffffff"}) is None  # 404
    with pytest.raises(CollateralError, match="fmspc"):
        src.get("tcb_info.json", {"tee": "tdx"})
    with pytest.raises(CollateralError, match="pck_ca"):
        src.get("pck_crl.der", {})
    assert src.get("vcek.pem", {}) is None
    with pytest.raises(CollateralError, match="failed"):
        IntelPcsCollateral("http://127.0.0.1:9", timeout=0.5).get("qe_identity.json",
                                                                   {"tee": "tdx"})


def test_pcs_missing_chain_header(pcs: CollateralServer) -> None:
    pcs.routes["/tdx/certification/v4/qe/identity"] = (b"{}", {})
    with pytest.raises(CollateralError, match="SGX-Enclave-Identity-Issuer-Chain"):
        IntelPcsCollateral(pcs.url, timeout=5).get("qe_identity.json", {"tee": "tdx"})


def test_cache_files_are_private(tmp_path: Path) -> None:
    CachingCollateral(MemoryCollateral({}), tmp_path / "priv")
    assert os.stat(tmp_path / "priv").st_mode & 0o077 == 0
