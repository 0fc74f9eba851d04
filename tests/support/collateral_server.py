"""A local stand-in for Intel PCS (API v4) and AMD KDS on 127.0.0.1: serves collateral built by
the test factories at the paths and with the headers the real services use, and records every
request, so tests can see what the KBS fetched and that its cache spared a second fetch."""

from __future__ import annotations

import contextlib
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class CollateralServer:
    #: request target (path + query) -> (body, extra headers)
    routes: dict[str, tuple[bytes, dict[str, str]]] = field(default_factory=dict)
    #: request target -> HTTP status other than 200 to answer with its route
    status: dict[str, int] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)
    url: str = ""

    def pcs(self, tee: str, fmspc: str, items: dict[str, bytes]) -> None:
        """Intel PCS v4 answers for one FMSPC from an offline bundle (factory collateral)."""
        def chain(name: str) -> str:  # PCS URL-encodes the PEM chain in a header
            return urllib.parse.quote(items[name].decode())

        self.routes[f"/{tee}/certification/v4/tcb?fmspc={fmspc}"] = (
            items["tcb_info.json"], {"TCB-Info-Issuer-Chain": chain("tcb_info_issuer_chain.pem")})
        self.routes[f"/{tee}/certification/v4/qe/identity"] = (
            items["qe_identity.json"],
            {"SGX-Enclave-Identity-Issuer-Chain": chain("qe_identity_issuer_chain.pem")})
        self.routes["/sgx/certification/v4/pckcrl?ca=platform&encoding=der"] = (
            items["pck_crl.der"], {"SGX-PCK-CRL-Issuer-Chain": chain("pck_crl_issuer_chain.pem")})
        self.routes["/IntelSGXRootCA.der"] = (items["root_ca_crl.der"], {})

    def kds(self, product: str, *, vcek: bytes, ask: bytes, ark: bytes, crl: bytes,
            vcek_query: str) -> None:
        """AMD KDS answers (pub. 57230 §4) for one chip at one TCB."""
        self.routes[f"/vcek/v1/{product}/cert_chain"] = (ask + ark, {})
        self.routes[f"/vcek/v1/{product}/crl"] = (crl, {})
        self.routes[vcek_query] = (vcek, {})


@contextlib.contextmanager
def collateral_server() -> Iterator[CollateralServer]:
    state = CollateralServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            state.seen.append(self.path)
            hit = state.routes.get(self.path)
            if hit is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body, headers = hit
            self.send_response(state.status.get(self.path, 200))
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
