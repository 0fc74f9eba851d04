"""Client of AMD's Key Distribution Service (KDS), used only when a verifier is configured with it.

What it does: fetches a VCEK certificate by product, chip id and reported TCB, the
ASK/ASVK + ARK chain and the ARK's CRL by product, over HTTP(S) (VCEK Certificate and KDS Interface
Specification, pub. 57230, §4: ``GET /vcek/v1/{product}/{hwid}?blSPL=..&teeSPL=..&snpSPL=..
&ucodeSPL=..`` (Turin adds ``fmcSPL`` and uses the first 8 bytes of the chip id), and
``GET /{vcek|vlek}/v1/{product}/cert_chain`` returning the ASK/ASVK then the ARK as PEM).
Responses are kept in memory by URL, so a chip is fetched once per process. It is also a
collateral source (``get(name, context)``, see :mod:`arca.verifier.collateral`), so it can sit
behind the on-disk ``CachingCollateral``.

What it does not do: trust what it fetched. Everything it returns goes through the same chain
verification and ARK pinning as certificates from a directory. VLEKs cannot be fetched: AMD
hands them to cloud providers only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import httpx

from arca.errors import CollateralError

KDS_URL = "https://kdsintf.amd.com"
#: KDS answers with one certificate (~1.4 KiB) or two PEM certificates (~4.5 KiB); anything
#: larger is not a KDS answer.
MAX_RESPONSE_BYTES = 64 * 1024
#: AMD rate-limits KDS; a stuck connection must not hold a verification forever.
DEFAULT_TIMEOUT_S = 10.0
#: A 404 is remembered this long (version 2 reports make us probe Milan before Genoa; AMD may
#: publish a certificate later, so not forever).
NOT_FOUND_TTL_S = 600.0
_PEM_END = b"-----END CERTIFICATE-----"


class KdsClient:
    """Fetches VCEKs and AMD CA chains from KDS (or a mirror with the same paths)."""

    def __init__(self, base_url: str = KDS_URL, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._cache: dict[str, bytes] = {}
        self._not_found: dict[str, float] = {}  # url → monotonic expiry
        self._lock = threading.Lock()

    def _get(self, path: str, *, remember: bool = True) -> bytes:
        url = self.base_url + path
        with self._lock:
            if remember and url in self._cache:
                return self._cache[url]
            if self._not_found.get(url, 0.0) > time.monotonic():
                raise CollateralError(f"AMD KDS answered 404 for {url}", tee="snp", url=url,
                                      status=404)
        try:
            with httpx.Client(timeout=self._timeout) as client, \
                    client.stream("GET", url) as resp:
                if resp.status_code == 404:
                    with self._lock:
                        self._not_found[url] = time.monotonic() + NOT_FOUND_TTL_S
                if resp.status_code != 200:
                    raise CollateralError(f"AMD KDS answered {resp.status_code} for {url}",
                                          tee="snp", url=url, status=resp.status_code)
                body = b""
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise CollateralError(f"AMD KDS response from {url} is too large",
                                              tee="snp", url=url)
        except httpx.HTTPError as e:
            raise CollateralError(f"AMD KDS request {url} failed: {e}", tee="snp",
                                  url=url) from None
        if remember:
            with self._lock:
                self._cache[url] = body
        return body

    def vcek(self, product: str, chip_id: bytes, tcb: Mapping[str, int]) -> bytes:
        """The DER VCEK of chip ``chip_id`` at TCB ``tcb`` (components as in REPORTED_TCB)."""
        if len(chip_id) != 64 or not any(chip_id):
            raise CollateralError("cannot fetch a VCEK: the report's CHIP_ID is masked",
                                  tee="snp")
        hwid = chip_id[:8] if product == "Turin" else chip_id
        params = [("blSPL", "bootloader"), ("teeSPL", "tee"), ("snpSPL", "snp"),
                  ("ucodeSPL", "microcode")]
        if product == "Turin":
            params.insert(0, ("fmcSPL", "fmc"))
        query = "&".join(f"{k}={tcb[c]:02d}" for k, c in params)
        return self._get(f"/vcek/v1/{product}/{hwid.hex()}?{query}")

    def cert_chain(self, product: str, leaf_kind: str = "VCEK") -> tuple[bytes, bytes]:
        """(ASK or ASVK PEM, ARK PEM) for ``product``."""
        kind = "vlek" if leaf_kind == "VLEK" else "vcek"
        body = self._get(f"/{kind}/v1/{product}/cert_chain")
        blocks = [b.strip() + b"\n" + _PEM_END + b"\n" for b in body.split(_PEM_END)
                  if b.strip()]
        if len(blocks) != 2:
            raise CollateralError(f"AMD KDS cert_chain for {product} does not hold 2 "
                                  f"certificates", tee="snp")
        return blocks[0], blocks[1]

    def crl(self, product: str, leaf_kind: str = "VCEK") -> bytes:
        """The DER CRL AMD's ARK issues for ``product`` (pub. 57230 §4: ``GET /{vcek|vlek}/v1/
        {product}/crl``): the revoked ASKs (or ASVKs). Not remembered here: a CRL expires, so
        freshness is the caller's cache's job (``CachingCollateral``)."""
        kind = "vlek" if leaf_kind == "VLEK" else "vcek"
        return self._get(f"/{kind}/v1/{product}/crl", remember=False)

    def get(self, name: str, context: Mapping[str, str] | None = None) -> bytes | None:
        """Collateral-source view. ``context``: ``product``, ``signing_key`` (``VCEK``/``VLEK``)
        and, for ``vcek.pem``, ``chip_id`` (hex) and the REPORTED_TCB components
        (``bootloader``, ``tee``, ``snp``, ``microcode``, Turin ``fmc``) as decimal strings.
        ``None`` when KDS has no such item (404) or cannot serve it (a VLEK)."""
        ctx = context or {}
        product = ctx.get("product", "")
        if not product:
            return None
        try:
            if name == "vcek.pem":
                comps = ("fmc", "bootloader", "tee", "snp", "microcode")
                tcb = {c: int(ctx[c]) for c in comps if c in ctx}
                return self.vcek(product, bytes.fromhex(ctx.get("chip_id", "")), tcb)
            if name in ("vcek_crl.der", "vlek_crl.der"):
                return self.crl(product, "VLEK" if name == "vlek_crl.der" else "VCEK")
            if name in ("ask.pem", "asvk.pem", "ark.pem"):
                kind = "VLEK" if name == "asvk.pem" else ctx.get("signing_key", "VCEK")
                ca, ark = self.cert_chain(product, kind)
                return ark if name == "ark.pem" else ca
        except CollateralError as e:
            if e.fields.get("status") == 404:
                return None
            raise
        except (KeyError, ValueError):
            return None
        return None
