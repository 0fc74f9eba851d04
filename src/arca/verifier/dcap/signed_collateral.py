"""Intel TCB Info (v2/v3, SGX and TDX) and QE Identity (v2): parse, verify, check currency.

A PCS response is ``{"tcbInfo": {...}, "signature": "<hex r||s>"}`` (or ``enclaveIdentity``);
the ECDSA P-256/SHA-256 signature covers the *exact text* of the inner object as it appears in
the document, so the text span is located with the JSON scanner rather than re-serialized.
The issuer chain (Intel SGX TCB Signing + Root CA) must verify to a pinned root.

Field names and meaning: Intel PCS API v4, "TCB Info V3" and "Enclave Identity V2" models.
Verified documents are cached by the digest of their bytes and issuer chain; currency
(``issueDate``..``nextUpdate`` and the chain's validity) is checked on every call.

Not here: TCB level matching (see :mod:`.tcb`).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from arca.errors import CollateralError, Expired, SignatureInvalid
from arca.verifier.dcap.chainorder import order_chain
from arca.verifier.dcap.pck import (
    ChainVerifier,
    LruCache,
    VerifiedChain,
    digest,
    load_pem_chain,
)

#: PCS documents are a few KiB (TDX TCB Info with many levels ~ 20 KiB).
MAX_COLLATERAL_JSON = 512 * 1024
#: TCB levels / advisory IDs per document: Intel publishes tens; bound the evaluation work.
MAX_LEVELS = 256

TCB_STATUSES = frozenset({
    "UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
    "OutOfDate", "OutOfDateConfigurationNeeded", "Revoked",
})


def _err(item: str, detail: str) -> CollateralError:
    return CollateralError(f"{item}: {detail}", field=item)


def signed_span(raw: bytes, key: str, item: str) -> tuple[dict[str, Any], bytes, bytes]:
    """Return (inner object, exact signed bytes of the inner object, signature bytes)."""
    if len(raw) > MAX_COLLATERAL_JSON:
        raise _err(item, f"{len(raw)} bytes exceeds {MAX_COLLATERAL_JSON}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _err(item, "not UTF-8") from e
    dec = json.JSONDecoder()
    ws = " \t\r\n"
    pos = 0
    spans: dict[str, tuple[Any, int, int]] = {}
    try:
        while pos < len(text) and text[pos] in ws:
            pos += 1
        if text[pos:pos + 1] != "{":
            raise _err(item, "not a JSON object")
        pos += 1
        while True:
            while text[pos] in ws:
                pos += 1
            if text[pos] == "}" and not spans:
                pos += 1
                break
            name, pos = json.decoder.scanstring(text, pos + 1)  # type: ignore[attr-defined]
            while text[pos] in ws:
                pos += 1
            if text[pos] != ":":
                raise _err(item, "expected ':'")
            pos += 1
            while text[pos] in ws:
                pos += 1
            value, end = dec.raw_decode(text, pos)
            if name in spans:
                raise _err(item, f"duplicate member {name!r}")
            spans[name] = (value, pos, end)
            pos = end
            while text[pos] in ws:
                pos += 1
            if text[pos] == ",":
                pos += 1
                continue
            if text[pos] == "}":
                pos += 1
                break
            raise _err(item, f"unexpected {text[pos]!r} at {pos}")
        if text[pos:].strip(ws):
            raise _err(item, "data after the JSON object")
    except (IndexError, ValueError) as e:
        if isinstance(e, CollateralError):
            raise
        raise _err(item, f"invalid JSON ({e})") from e
    if key not in spans or "signature" not in spans:
        raise _err(item, f"expected members {key!r} and 'signature'")
    inner, start, end = spans[key]
    sig_hex = spans["signature"][0]
    if not isinstance(inner, dict) or not isinstance(sig_hex, str):
        raise _err(item, f"{key!r} must be an object and 'signature' a hex string")
    try:
        sig = bytes.fromhex(sig_hex)
    except ValueError as e:
        raise _err(item, "signature is not hex") from e
    if len(sig) != 64:
        raise _err(item, f"signature has {len(sig)} bytes, expected 64 (r || s)")
    return inner, text[start:end].encode("utf-8"), sig


def verify_p256(key: ec.EllipticCurvePublicKey, sig: bytes, data: bytes) -> bool:
    """ECDSA P-256/SHA-256 over ``data`` with a raw 64-byte r||s signature."""
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


# --- typed field readers ---------------------------------------------------------------

def _get(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], item: str) -> Any:
    if name not in obj:
        raise _err(item, f"missing {name!r}")
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise _err(item, f"{name!r} has the wrong type")
    return value


def _uint(obj: dict[str, Any], name: str, item: str, limit: int = 0xFFFF) -> int:
    value: int = _get(obj, name, int, item)
    if not 0 <= value <= limit:
        raise _err(item, f"{name!r} = {value} out of range")
    return value


def _hex(obj: dict[str, Any], name: str, size: int, item: str) -> bytes:
    try:
        value = bytes.fromhex(_get(obj, name, str, item))
    except ValueError as e:
        raise _err(item, f"{name!r} is not hex") from e
    if len(value) != size:
        raise _err(item, f"{name!r} has {len(value)} bytes, expected {size}")
    return value


def _time(obj: dict[str, Any], name: str, item: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(_get(obj, name, str, item))
    except ValueError as e:
        raise _err(item, f"{name!r} is not an ISO-8601 time") from e
    if value.tzinfo is None:
        raise _err(item, f"{name!r} has no time zone")
    return value.astimezone(dt.UTC)


def _status(obj: dict[str, Any], item: str) -> str:
    value: str = _get(obj, "tcbStatus", str, item)
    if value not in TCB_STATUSES:
        raise _err(item, f"unrecognized tcbStatus {value!r}")
    return value


def _advisories(obj: dict[str, Any], item: str) -> tuple[str, ...]:
    ids = obj.get("advisoryIDs", [])
    if not isinstance(ids, list) or len(ids) > MAX_LEVELS or \
            not all(isinstance(a, str) for a in ids):
        raise _err(item, "'advisoryIDs' must be a list of strings")
    return tuple(ids)


def _list(obj: dict[str, Any], name: str, item: str) -> list[Any]:
    value: list[Any] = _get(obj, name, list, item)
    if not value or len(value) > MAX_LEVELS:
        raise _err(item, f"{name!r} must hold 1..{MAX_LEVELS} entries")
    return value


# --- models --------------------------------------------------------------------------------

@dataclass(frozen=True)
class TcbLevel:
    sgx_components: tuple[int, ...]
    pce_svn: int
    tdx_components: tuple[int, ...] | None
    tcb_date: dt.datetime
    status: str
    advisory_ids: tuple[str, ...]

    def order_key(self) -> tuple[int, ...]:
        return (*self.sgx_components, self.pce_svn, *(self.tdx_components or ()))


@dataclass(frozen=True)
class IdentityLevel:
    """A level of a QE identity or a TDX module identity: ``isvsvn`` and its status."""

    isv_svn: int
    tcb_date: dt.datetime | None
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class TdxModuleIdentity:
    id: str
    mrsigner: bytes
    attributes: bytes
    attributes_mask: bytes
    levels: tuple[IdentityLevel, ...]  # descending isvsvn


@dataclass(frozen=True)
class TcbInfo:
    id: str                       # "SGX" or "TDX"
    version: int
    issue_date: dt.datetime
    next_update: dt.datetime
    fmspc: bytes
    pce_id: bytes
    tcb_type: int
    tcb_evaluation_data_number: int
    levels: tuple[TcbLevel, ...]  # Intel's order: descending (SGX comps, PCESVN, TDX comps)
    tdx_module: TdxModuleIdentity | None
    tdx_module_identities: tuple[TdxModuleIdentity, ...]


@dataclass(frozen=True)
class QeIdentity:
    id: str                       # "QE", "TD_QE" or "QVE"
    version: int
    issue_date: dt.datetime
    next_update: dt.datetime
    miscselect: int
    miscselect_mask: int
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isv_prod_id: int
    levels: tuple[IdentityLevel, ...]  # descending isvsvn


def _components(level_tcb: dict[str, Any], name: str, item: str) -> tuple[int, ...]:
    comps = _get(level_tcb, name, list, item)
    if len(comps) != 16 or not all(isinstance(c, dict) for c in comps):
        raise _err(item, f"{name!r} must list 16 components")
    return tuple(_uint(c, "svn", item, 255) for c in comps)


def _identity_levels(raw: list[Any], item: str, dated: bool) -> tuple[IdentityLevel, ...]:
    out = []
    for lvl in raw:
        if not isinstance(lvl, dict):
            raise _err(item, "TCB level is not an object")
        tcb = _get(lvl, "tcb", dict, item)
        out.append(IdentityLevel(
            _uint(tcb, "isvsvn", item), _time(lvl, "tcbDate", item) if dated else None,
            _status(lvl, item), _advisories(lvl, item)))
    return tuple(sorted(out, key=lambda lv: lv.isv_svn, reverse=True))


def _module(obj: dict[str, Any], item: str, ident: str) -> TdxModuleIdentity:
    raw_levels = obj.get("tcbLevels")
    levels = _identity_levels(_list(obj, "tcbLevels", item), item, True) if raw_levels else ()
    return TdxModuleIdentity(ident, _hex(obj, "mrsigner", 48, item),
                             _hex(obj, "attributes", 8, item),
                             _hex(obj, "attributesMask", 8, item), levels)


def parse_tcb_info(obj: dict[str, Any], item: str = "tcb_info") -> TcbInfo:
    version = _uint(obj, "version", item)
    if version not in (2, 3):
        raise _err(item, f"TCB Info version {version} unsupported (2 or 3)")
    ident = _get(obj, "id", str, item) if version == 3 else "SGX"
    if ident not in ("SGX", "TDX"):
        raise _err(item, f"unknown TCB Info id {ident!r}")
    levels = []
    for lvl in _list(obj, "tcbLevels", item):
        if not isinstance(lvl, dict):
            raise _err(item, "TCB level is not an object")
        tcb = _get(lvl, "tcb", dict, item)
        if version == 3:
            sgx = _components(tcb, "sgxtcbcomponents", item)
            tdx = _components(tcb, "tdxtcbcomponents", item) if ident == "TDX" else None
        else:  # v2: sgxtcbcomp01svn .. sgxtcbcomp16svn
            sgx = tuple(_uint(tcb, f"sgxtcbcomp{i:02d}svn", item, 255) for i in range(1, 17))
            tdx = None
        levels.append(TcbLevel(sgx, _uint(tcb, "pcesvn", item), tdx,
                               _time(lvl, "tcbDate", item), _status(lvl, item),
                               _advisories(lvl, item)))
    # Intel's order; sorted() is stable so equal keys keep document order.
    levels.sort(key=TcbLevel.order_key, reverse=True)
    module = None
    identities: tuple[TdxModuleIdentity, ...] = ()
    if ident == "TDX":
        module = _module(_get(obj, "tdxModule", dict, item), item, "TDX")
        raw_ids = obj.get("tdxModuleIdentities", [])
        if not isinstance(raw_ids, list) or len(raw_ids) > MAX_LEVELS:
            raise _err(item, "'tdxModuleIdentities' must be a list")
        if not all(isinstance(m, dict) for m in raw_ids):
            raise _err(item, "'tdxModuleIdentities' entries must be objects")
        identities = tuple(_module(m, item, _get(m, "id", str, item)) for m in raw_ids)
    return TcbInfo(
        ident, version, _time(obj, "issueDate", item), _time(obj, "nextUpdate", item),
        _hex(obj, "fmspc", 6, item), _hex(obj, "pceId", 2, item),
        _uint(obj, "tcbType", item) if version == 3 or "tcbType" in obj else 0,
        _uint(obj, "tcbEvaluationDataNumber", item, 2**32 - 1)
        if "tcbEvaluationDataNumber" in obj else 0,
        tuple(levels), module, identities)


def parse_qe_identity(obj: dict[str, Any], item: str = "qe_identity") -> QeIdentity:
    version = _uint(obj, "version", item)
    if version != 2:
        raise _err(item, f"enclave identity version {version} unsupported (2)")
    ident = _get(obj, "id", str, item)
    if ident not in ("QE", "TD_QE", "QVE"):
        raise _err(item, f"unknown enclave identity id {ident!r}")
    return QeIdentity(
        ident, version, _time(obj, "issueDate", item), _time(obj, "nextUpdate", item),
        int.from_bytes(_hex(obj, "miscselect", 4, item), "big"),
        int.from_bytes(_hex(obj, "miscselectMask", 4, item), "big"),
        _hex(obj, "attributes", 16, item), _hex(obj, "attributesMask", 16, item),
        _hex(obj, "mrsigner", 32, item), _uint(obj, "isvprodid", item),
        _identity_levels(_list(obj, "tcbLevels", item), item, True))


@dataclass(frozen=True)
class _Verified:
    doc: TcbInfo | QeIdentity
    chain: VerifiedChain


class SignedCollateral:
    """Verifies TCB Info / QE Identity documents against their issuer chain, with a cache."""

    def __init__(self, chains: ChainVerifier) -> None:
        self.chains = chains
        self._cache: LruCache[bytes, _Verified] = LruCache()

    def _load(self, raw: bytes, chain_pem: bytes, key: str, item: str) -> _Verified:
        cache_key = digest(key.encode(), raw, chain_pem)
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        inner, signed, sig = signed_span(raw, key, item)
        name = f"{item}_issuer_chain"
        chain = self.chains.verify(order_chain(load_pem_chain(chain_pem, name, CollateralError),
                                               name, CollateralError), name)
        if not verify_p256(chain.leaf_key, sig, signed):
            raise SignatureInvalid(f"{item}: signature does not verify with {chain.names[0]}",
                                   tee="dcap", field=item)
        doc: TcbInfo | QeIdentity = parse_tcb_info(inner, item) if key == "tcbInfo" \
            else parse_qe_identity(inner, item)
        result = _Verified(doc, chain)
        self._cache.put(cache_key, result)
        return result

    @staticmethod
    def _current(doc: TcbInfo | QeIdentity, chain: VerifiedChain, at: dt.datetime,
                 item: str) -> None:
        chain.check_time(at, f"{item}_issuer_chain")
        if at < doc.issue_date or at > doc.next_update:
            raise Expired(f"{item}: valid {doc.issue_date.isoformat()}.."
                          f"{doc.next_update.isoformat()}, evaluated at {at.isoformat()}",
                          tee="dcap", field=item,
                          expected=f"{doc.issue_date.isoformat()}..{doc.next_update.isoformat()}",
                          actual=at.isoformat())

    def tcb_info(self, raw: bytes, chain_pem: bytes, at: dt.datetime
                 ) -> tuple[TcbInfo, VerifiedChain]:
        v = self._load(raw, chain_pem, "tcbInfo", "tcb_info")
        assert isinstance(v.doc, TcbInfo)
        self._current(v.doc, v.chain, at, "tcb_info")
        return v.doc, v.chain

    def qe_identity(self, raw: bytes, chain_pem: bytes, at: dt.datetime
                    ) -> tuple[QeIdentity, VerifiedChain]:
        v = self._load(raw, chain_pem, "enclaveIdentity", "qe_identity")
        assert isinstance(v.doc, QeIdentity)
        self._current(v.doc, v.chain, at, "qe_identity")
        return v.doc, v.chain
