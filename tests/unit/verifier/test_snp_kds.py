"""The AMD KDS client and the verifier's online path, against a real local HTTP server that
serves the factory's PKI under KDS's paths."""

from __future__ import annotations

import contextlib
import pathlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from arca.errors import CollateralError
from arca.verifier.collateral import CachingCollateral
from arca.verifier.snp import SnpVerifier
from arca.verifier.snp.certs import load_amd_cert
from arca.verifier.snp.kds import KdsClient
from tests.support.snp_factory import NOW, MemoryCollateral, SnpCase, build_case


@contextlib.contextmanager
def kds_server(routes: dict[str, bytes]) -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.path)
            body = routes.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def routes_for(case: SnpCase, product: str) -> dict[str, bytes]:
    tcb = case.fields.reported_tcb
    hwid = case.fields.chip_id[:8] if product == "Turin" else case.fields.chip_id
    q = {"blSPL": tcb["bootloader"], "teeSPL": tcb["tee"], "snpSPL": tcb["snp"],
         "ucodeSPL": tcb["microcode"]}
    if product == "Turin":
        q = {"fmcSPL": tcb["fmc"], **q}
    query = "&".join(f"{k}={v:02d}" for k, v in q.items())
    vcek_der = load_amd_cert(case.files["vcek.pem"], "vcek").der
    return {
        f"/vcek/v1/{product}/{hwid.hex()}?{query}": vcek_der,
        f"/vcek/v1/{product}/cert_chain": case.files["ask.pem"] + case.files["ark.pem"],
    }


@pytest.mark.parametrize("product,version", [("Milan", 3), ("Turin", 5), ("Genoa", 2)])
def test_verifier_fetches_vcek_and_chain_from_kds_once(product: str, version: int) -> None:
    case = build_case(product, version)
    with kds_server(routes_for(case, product)) as (url, seen):
        v = SnpVerifier(None, pinned_arks=case.pins, kds=KdsClient(url))
        for _ in range(3):
            claims = v.verify(case.report, at=NOW).to_dict()
        assert claims["product"] == product
    # Version 2 does not name its product: Milan is tried (404) before Genoa.
    assert len([p for p in seen if "cert_chain" in p]) == 1
    assert len(set(seen)) == len(seen)
    if product == "Turin":
        assert any("fmcSPL=01&blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115" in p for p in seen)


def test_directory_collateral_wins_over_kds() -> None:
    case = build_case()
    with kds_server({}) as (url, seen):
        SnpVerifier(case.collateral(), pinned_arks=case.pins, kds=KdsClient(url)).verify(
            case.report, at=NOW)
    assert seen == []


def test_kds_not_found_is_a_collateral_error() -> None:
    case = build_case("Milan", 3)
    with kds_server({}) as (url, _), pytest.raises(CollateralError, match="missing: vcek.pem"):
        SnpVerifier(None, pinned_arks=case.pins, kds=KdsClient(url)).verify(case.report, at=NOW)


def test_kds_unreachable_is_a_collateral_error() -> None:
    with pytest.raises(CollateralError, match="failed"):
        KdsClient("http://127.0.0.1:9", timeout=2).cert_chain("Milan")


def test_masked_chip_id_cannot_be_fetched() -> None:
    case = build_case("Milan", 3, chip_id=bytes(64))
    with pytest.raises(CollateralError, match="masked"):
        SnpVerifier(None, pinned_arks=case.pins, kds=KdsClient("http://127.0.0.1:9")).verify(
            case.report, at=NOW)


def test_vlek_is_never_fetched_but_its_chain_is() -> None:
    case = build_case("Milan", 3, "VLEK")
    routes = {"/vlek/v1/Milan/cert_chain": case.files["asvk.pem"] + case.files["ark.pem"]}
    with kds_server(routes) as (url, _):
        with pytest.raises(CollateralError, match="missing: vlek.pem"):
            SnpVerifier(None, pinned_arks=case.pins, kds=KdsClient(url)).verify(
                case.report, at=NOW)
        files = {"vlek.pem": case.files["vlek.pem"]}  # as a cloud provider hands it out
        claims = SnpVerifier(MemoryCollateral(files), pinned_arks=case.pins,
                             kds=KdsClient(url)).verify(case.report, at=NOW)
        assert claims.values["signing_key"] == "VLEK"


def test_oversized_and_malformed_chain_answers_are_refused() -> None:
    routes = {"/vcek/v1/Milan/cert_chain": b"x" * (65 * 1024),
              "/vcek/v1/Genoa/cert_chain": b"-----BEGIN CERTIFICATE-----\nAA==\n"
                                           b"-----END CERTIFICATE-----\n"}
    with kds_server(routes) as (url, _):
        with pytest.raises(CollateralError, match="too large"):
            KdsClient(url).cert_chain("Milan")
        with pytest.raises(CollateralError, match="2 certificates"):
            KdsClient(url).cert_chain("Genoa")


def test_kds_as_a_collateral_source_behind_the_disk_cache(tmp_path: pathlib.Path) -> None:
    case = build_case("Milan", 3)
    with kds_server(routes_for(case, "Milan")) as (url, seen):
        cached = CachingCollateral(KdsClient(url), tmp_path)
        claims = SnpVerifier(None, pinned_arks=case.pins, kds=cached).verify(case.report, at=NOW)
        assert claims.values["product"] == "Milan"
        n = len(seen)
        # A new process (fresh client, same cache directory) needs no request at all.
        SnpVerifier(None, pinned_arks=case.pins,
                    kds=CachingCollateral(KdsClient(url), tmp_path)).verify(case.report, at=NOW)
        assert len(seen) == n
    kds = KdsClient("http://127.0.0.1:9")
    assert kds.get("vcek.pem", {}) is None  # no product in context
    assert kds.get("vlek.pem", {"product": "Milan"}) is None


def test_v2_vlek_chain_is_fetched_for_the_product_its_leaf_names() -> None:
    case = build_case("Genoa", 2, "VLEK")
    routes = {"/vlek/v1/Genoa/cert_chain": case.files["asvk.pem"] + case.files["ark.pem"]}
    with kds_server(routes) as (url, seen):
        claims = SnpVerifier(MemoryCollateral({"vlek.pem": case.files["vlek.pem"]}),
                             pinned_arks=case.pins, kds=KdsClient(url)).verify(case.report,
                                                                                at=NOW)
    assert claims.values["product"] == "Genoa"
    assert seen == ["/vlek/v1/Genoa/cert_chain"]
