"""SEV-SNP collateral checks beyond the signature chain: AMD's revocation list and a minimum TCB.

SNP has no TCB status service like Intel's TCB Info: whether a REPORTED_TCB is recent enough is
the relying party's rule. This module gives it one explicit form, :class:`MinimumTcb` (per
product, every TCB_VERSION component of that product), and turns a verified report into a
``tcb_status`` claim: ``UpToDate`` when every component of REPORTED_TCB (the TCB the VCEK/VLEK
certifies, checked equal by the verifier's step 8) is at least the minimum, else ``OutOfDate``.
A product without a configured minimum is ``TcbNotSupported``: rejected, never guessed.

Revocation: AMD KDS serves, per product, a CRL signed by the ARK (pub. 57230 §4,
``/vcek/v1/{product}/crl`` and ``/vlek/v1/{product}/crl``). A CRL can only revoke certificates
its issuer signed, so it names revoked ASKs / ASVKs; VCEKs and VLEKs (all serial 0) are
retired by AMD through TCB updates, which is what the minimum TCB judges. :func:`check_crl`
verifies the CRL (issuer = the chain's ARK, RSASSA-PSS/SHA-384 signature by the ARK key,
current at the evaluation instant) and refuses an intermediate it lists.

What it does not do: fetch anything (collateral sources do) or appraise (the KBS policy does;
``OutOfDate`` is a claim, not an error).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from arca.errors import CollateralError, Expired, Revoked, SignatureInvalid, TcbError
from arca.verifier.snp.certs import VerifiedChain
from arca.verifier.snp.report import PRODUCTS

#: TCB_VERSION components per product (ABI spec Table 3; Turin adds FMC).
COMPONENTS: dict[str, tuple[str, ...]] = {
    "Milan": ("bootloader", "tee", "snp", "microcode"),
    "Genoa": ("bootloader", "tee", "snp", "microcode"),
    "Turin": ("fmc", "bootloader", "tee", "snp", "microcode"),
}
#: Collateral item names of the ARK's CRL, by the report's signing key.
CRL_NAMES = {"VCEK": "vcek_crl.der", "VLEK": "vlek_crl.der"}
#: Parsed CRLs remembered (keyed by CRL and ARK bytes): a handful per product.
_CRL_CACHE_SIZE = 16
_ITEM = re.compile(r"^\s*([a-z]+)\s*=\s*(\d{1,3})\s*$")


@dataclass(frozen=True)
class MinimumTcb:
    """Per product, the lowest acceptable value of every TCB component."""

    per_product: Mapping[str, Mapping[str, int]]

    @classmethod
    def parse(cls, value: Mapping[str, Any] | Iterable[str] | None) -> MinimumTcb | None:
        """From a mapping ``{"Milan": {"bootloader": 3, ...}}`` (config file) or strings
        ``"Milan:bootloader=3,tee=0,snp=8,microcode=115"`` (command line). ``ValueError``
        names what is wrong; every component of the product is required (no silent 0)."""
        if value is None:
            return None
        raw: dict[str, dict[str, int]] = {}
        if isinstance(value, Mapping):
            for product, table in value.items():
                if not isinstance(table, Mapping):
                    raise ValueError(f"snp minimum TCB for {product}: expected a table")
                raw[str(product)] = {str(k): v for k, v in table.items()}
        else:
            for item in value:
                product, sep, rest = str(item).partition(":")
                if not sep:
                    raise ValueError(f"snp minimum TCB {item!r}: expected "
                                     "PRODUCT:component=N,component=N,...")
                comps: dict[str, int] = {}
                for part in rest.split(","):
                    m = _ITEM.fullmatch(part)
                    if m is None:
                        raise ValueError(f"snp minimum TCB {item!r}: {part!r} is not "
                                         "component=N")
                    comps[m.group(1)] = int(m.group(2))
                raw[product.strip()] = comps
        if not raw:
            return None
        for product, comps in raw.items():
            if product not in PRODUCTS:
                raise ValueError(f"snp minimum TCB: unknown product {product!r} "
                                 f"(one of {', '.join(PRODUCTS)})")
            want = set(COMPONENTS[product])
            if set(comps) != want:
                raise ValueError(f"snp minimum TCB for {product}: needs exactly "
                                 f"{', '.join(COMPONENTS[product])}; got {', '.join(comps)}")
            for comp, v in comps.items():
                if type(v) is not int or not 0 <= v <= 255:
                    raise ValueError(f"snp minimum TCB {product}.{comp}: {v!r} is not 0..255")
        return cls({p: dict(c) for p, c in raw.items()})

    def status(self, product: str, reported: Mapping[str, int]) -> str:
        """``UpToDate`` or ``OutOfDate``; :class:`TcbError` when ``product`` has no rule."""
        floor = self.per_product.get(product)
        if floor is None:
            raise TcbError(f"tcb_status: TcbNotSupported: no minimum TCB is configured for "
                           f"{product}", tee="snp", field="tcb_status",
                           tcb_status="TcbNotSupported")
        low = [c for c, v in floor.items() if reported.get(c, -1) < v]
        return "OutOfDate" if low else "UpToDate"

    def to_json(self) -> dict[str, dict[str, int]]:
        return {p: dict(c) for p, c in self.per_product.items()}


_crl_cache: OrderedDict[bytes, tuple[frozenset[int], dt.datetime, dt.datetime]] = OrderedDict()
_crl_lock = threading.Lock()


def _load_crl(crl_der: bytes, chain: VerifiedChain, item: str
              ) -> tuple[frozenset[int], dt.datetime, dt.datetime]:
    ark = chain.ark
    if ark is None:
        raise ValueError("the verified chain does not carry its ARK")
    key = hashlib.sha256(len(crl_der).to_bytes(4, "big") + crl_der + ark.der).digest()
    with _crl_lock:
        hit = _crl_cache.get(key)
    if hit is not None:
        return hit
    try:
        crl = x509.load_der_x509_crl(crl_der)
        issuer, this_update, next_update = crl.issuer, crl.last_update_utc, crl.next_update_utc
        serials = frozenset(r.serial_number for r in crl)
    except ValueError as e:
        raise CollateralError(f"{item}: not a DER CRL ({e})", tee="snp", field=item) from None
    if issuer != ark.cert.subject:
        raise CollateralError(f"{item}: issued by {issuer.rfc4514_string()}, not by the chain's "
                              f"{ark.common_name}", tee="snp", field=item)
    if crl.signature_algorithm_oid != x509.SignatureAlgorithmOID.RSASSA_PSS:
        raise SignatureInvalid(f"{item}: not signed with RSASSA-PSS", tee="snp", field=item)
    try:
        ok = crl.is_signature_valid(ark.public_key)
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise SignatureInvalid(f"{item}: CRL signature does not verify with "
                               f"{ark.common_name}", tee="snp", field=item)
    if next_update is None:
        raise CollateralError(f"{item}: CRL has no nextUpdate", tee="snp", field=item)
    hit = (serials, this_update, next_update)
    with _crl_lock:
        _crl_cache[key] = hit
        while len(_crl_cache) > _CRL_CACHE_SIZE:
            _crl_cache.popitem(last=False)
    return hit


def check_crl(crl_der: bytes, chain: VerifiedChain, at: dt.datetime) -> None:
    """The ARK's CRL is authentic and current at ``at``, and does not list the chain's
    ASK/ASVK. Raises ``CollateralError`` (unusable CRL), ``SignatureInvalid``, ``Expired``
    (stale CRL) or ``Revoked``."""
    item = CRL_NAMES[chain.leaf_kind]
    serials, this_update, next_update = _load_crl(crl_der, chain, item)
    if not this_update <= at <= next_update:
        raise Expired(f"{item}: CRL valid {this_update.isoformat()}..{next_update.isoformat()}, "
                      f"evaluated at {at.isoformat()}", tee="snp", field=item,
                      expected=f"{this_update.isoformat()}..{next_update.isoformat()}",
                      actual=at.isoformat())
    inter = chain.intermediate
    if inter is None:
        raise ValueError("the verified chain does not carry its ASK/ASVK")
    if inter.cert.serial_number in serials:
        name = "ask" if chain.leaf_kind == "VCEK" else "asvk"
        raise Revoked(f"{name}: {inter.common_name} (serial {inter.cert.serial_number:#x}) is "
                      f"revoked by the {chain.product} ARK's CRL", tee="snp", field=name)
