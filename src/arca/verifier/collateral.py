"""Where verifiers get collateral: the ``CollateralSource`` protocol and its implementations.

Protocol (used by every verifier, SGX/TDX/SNP alike)::

    source.get(name, context=None) -> bytes | None

``name`` is a file name of the offline bundle layout (``../shared/vectors/README.md``):

* Intel: ``tcb_info.json``, ``tcb_info_issuer_chain.pem``, ``qe_identity.json``,
  ``qe_identity_issuer_chain.pem``, ``pck_crl.der``, ``pck_crl_issuer_chain.pem``,
  ``root_ca_crl.der``
* AMD: ``vcek.pem``, ``vlek.pem``, ``ask.pem``, ``asvk.pem``, ``ark.pem`` (and any other
  ``[a-z0-9_.-]+`` name a verifier documents)

``context`` says what the item is for, so online sources can build their query; sources that
serve a fixed bundle ignore it. Keys used by the Intel verifiers: ``tee`` (``"sgx"``/``"tdx"``),
``fmspc`` (lowercase hex), ``pck_ca`` (``"platform"``/``"processor"``). AMD keys are documented
by the SNP verifier. ``None`` means "not available"; a source that *failed* (I/O, HTTP)
raises :class:`~arca.errors.CollateralError`.

Sources: :class:`DirectoryCollateral` (offline bundle), :class:`MemoryCollateral`,
:class:`ChainedCollateral` (first that has it), :class:`CachingCollateral` (on-disk cache in
front of another source) and :class:`IntelPcsCollateral` (Intel PCS API v4, online, used only
when configured).

Collateral is never trusted because of where it came from: the verifiers check signatures and
currency of everything a source returns. Sources only decide availability.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import httpx

from arca._internal.fsutil import write_atomic
from arca.errors import CollateralError

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
#: Largest collateral item accepted from any source (TCB Info ~ 20 KiB, CRLs ~ 1 KiB).
MAX_ITEM_SIZE = 1024 * 1024


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"invalid collateral name {name!r}")


@runtime_checkable
class CollateralSource(Protocol):
    def get(self, name: str, context: Mapping[str, str] | None = None) -> bytes | None: ...


class MemoryCollateral:
    """Collateral held in a mapping (tests, embedding applications)."""

    def __init__(self, items: Mapping[str, bytes]) -> None:
        self.items = dict(items)

    def get(self, name: str, context: Mapping[str, str] | None = None) -> bytes | None:
        return self.items.get(name)


class DirectoryCollateral:
    """An offline bundle: one directory, one file per item, named as above.

    Files are read once and served from memory while their size and mtime stay the same.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise CollateralError(f"collateral directory {self.path} does not exist",
                                  field="collateral_dir")
        self._dir = str(self.path)
        self._memo: dict[str, tuple[int, int, bytes]] = {}

    def get(self, name: str, context: Mapping[str, str] | None = None) -> bytes | None:
        _check_name(name)
        file = os.path.join(self._dir, name)  # plain strings: this runs per verification
        try:
            st = os.stat(file)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise CollateralError(f"{name}: cannot stat {file}: {e.strerror}", field=name) from e
        memo = self._memo.get(name)
        if memo is not None and memo[0] == st.st_mtime_ns and memo[1] == st.st_size:
            return memo[2]
        if st.st_size > MAX_ITEM_SIZE:
            raise CollateralError(f"{name}: {st.st_size} bytes exceeds {MAX_ITEM_SIZE}",
                                  field=name)
        try:
            with open(file, "rb") as f:
                data = f.read(MAX_ITEM_SIZE + 1)
        except OSError as e:
            raise CollateralError(f"{name}: cannot read {file}: {e.strerror}", field=name) from e
        self._memo[name] = (st.st_mtime_ns, st.st_size, data)
        return data


class ChainedCollateral:
    """Asks each source in turn; the first that has the item wins."""

    def __init__(self, *sources: CollateralSource) -> None:
        self.sources = sources

    def get(self, name: str, context: Mapping[str, str] | None = None) -> bytes | None:
        for source in self.sources:
            data = source.get(name, context)
            if data is not None:
                return data
        return None


class CachingCollateral:
    """On-disk cache in front of another source (typically :class:`IntelPcsCollateral`).

    Entries younger than ``max_age`` seconds are served without asking the inner source.
    When the inner source fails, a stale entry is served instead (the verifier still rejects
    collateral past its ``nextUpdate``), so a PCS outage does not stop verification.
    """

    def __init__(self, inner: CollateralSource, cache_dir: str | os.PathLike[str],
                 max_age: float = 3600.0) -> None:
        self.inner = inner
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.max_age = max_age
        self._memo: dict[str, tuple[float, bytes]] = {}
        self._lock = threading.Lock()

    def _key(self, name: str, context: Mapping[str, str] | None) -> str:
        ctx = json.dumps(sorted((context or {}).items()))
        digest = hashlib.sha256(name.encode() + b"\0" + ctx.encode()).hexdigest()
        return f"{digest}-{name}"

    def get(self, name: str, context: Mapping[str, str] | None = None) -> bytes | None:
        _check_name(name)
        key = self._key(name, context)
        now = time.time()
        memo = self._memo.get(key)
        if memo is not None and now - memo[0] < self.max_age:
            return memo[1]
        file = self.dir / key
        stale: bytes | None = None
        try:
            st = file.stat()
            stale = file.read_bytes()
            if now - st.st_mtime < self.max_age:
                self._memo[key] = (st.st_mtime, stale)
                return stale
        except FileNotFoundError:
            pass
        except OSError as e:
            raise CollateralError(f"{name}: cache {file}: {e.strerror}", field=name) from e
        try:
            data = self.inner.get(name, context)
        except CollateralError:
            if stale is not None:
                return stale
            raise
        if data is None:
            return stale
        self._write(file, data)
        with self._lock:
            self._memo[key] = (now, data)
        return data

    def _write(self, file: Path, data: bytes) -> None:
        try:
            write_atomic(file, data, 0o600)
        except OSError as e:
            raise CollateralError(f"cache write {file}: {e.strerror}") from e


#: Intel Provisioning Certification Service, API version 4.
INTEL_PCS_URL = "https://api.trustedservices.intel.com"
INTEL_ROOT_CA_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"


class IntelPcsCollateral:
    """Fetches Intel collateral from the PCS v4 API (online; only used when configured).

    ``tcb_info.json`` and ``qe_identity.json`` need ``context["tee"]``; ``tcb_info.json`` also
    ``context["fmspc"]``; ``pck_crl.der`` needs ``context["pck_ca"]``. Issuer chains come from
    the response headers of the same request (``TCB-Info-Issuer-Chain``,
    ``SGX-Enclave-Identity-Issuer-Chain``, ``SGX-PCK-CRL-Issuer-Chain``).
    """

    #: Pairing a document with its issuer-chain header needs the response briefly in memory.
    MEMO_SECONDS = 60.0

    def __init__(self, base_url: str = INTEL_PCS_URL, *,
                 root_ca_crl_url: str = INTEL_ROOT_CA_CRL_URL, timeout: float = 10.0,
                 client: httpx.Client | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.root_ca_crl_url = root_ca_crl_url
        self.client = client or httpx.Client(timeout=timeout, follow_redirects=False)
        self._memo: dict[str, tuple[float, bytes, bytes | None]] = {}
        self._lock = threading.Lock()

    def _fetch(self, url: str, chain_header: str | None) -> tuple[bytes, bytes | None] | None:
        now = time.monotonic()
        with self._lock:
            memo = self._memo.get(url)
        if memo is not None and now - memo[0] < self.MEMO_SECONDS:
            return memo[1], memo[2]
        try:
            resp = self.client.get(url)
        except httpx.HTTPError as e:
            raise CollateralError(f"PCS request {url} failed: {e}", field="pcs") from e
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise CollateralError(f"PCS request {url}: HTTP {resp.status_code}", field="pcs")
        body = resp.content
        if len(body) > MAX_ITEM_SIZE:
            raise CollateralError(f"PCS response {url} too large", field="pcs")
        chain = None
        if chain_header is not None:
            raw = resp.headers.get(chain_header)
            if raw is None:
                raise CollateralError(f"PCS response {url} lacks the {chain_header} header",
                                      field="pcs")
            chain = urllib.parse.unquote(raw).encode()
        with self._lock:
            self._memo[url] = (now, body, chain)
        return body, chain

    def _tee(self, context: Mapping[str, str] | None, name: str) -> str:
        tee = (context or {}).get("tee")
        if tee not in ("sgx", "tdx"):
            raise CollateralError(f"{name}: PCS needs context tee=sgx|tdx", field=name)
        return tee

    def get(self, name: str, context: Mapping[str, str] | None = None) -> bytes | None:
        ctx = context or {}
        if name in ("tcb_info.json", "tcb_info_issuer_chain.pem"):
            fmspc = ctx.get("fmspc", "")
            if not re.fullmatch(r"[0-9a-fA-F]{12}", fmspc):
                raise CollateralError(f"{name}: PCS needs context fmspc (12 hex digits)",
                                      field=name)
            url = f"{self.base}/{self._tee(ctx, name)}/certification/v4/tcb?fmspc={fmspc}"
            got = self._fetch(url, "TCB-Info-Issuer-Chain")
        elif name in ("qe_identity.json", "qe_identity_issuer_chain.pem"):
            url = f"{self.base}/{self._tee(ctx, name)}/certification/v4/qe/identity"
            got = self._fetch(url, "SGX-Enclave-Identity-Issuer-Chain")
        elif name in ("pck_crl.der", "pck_crl_issuer_chain.pem"):
            ca = ctx.get("pck_ca")
            if ca not in ("platform", "processor"):
                raise CollateralError(f"{name}: PCS needs context pck_ca=platform|processor",
                                      field=name)
            url = f"{self.base}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der"
            got = self._fetch(url, "SGX-PCK-CRL-Issuer-Chain")
        elif name == "root_ca_crl.der":
            got = self._fetch(self.root_ca_crl_url, None)
        else:
            return None
        if got is None:
            return None
        return got[1] if name.endswith("_issuer_chain.pem") else got[0]
