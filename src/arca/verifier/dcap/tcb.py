"""TCB level matching (Intel SGX/TDX DCAP Quote Verification Library, TCB evaluation).

Given verified collateral and the platform's TCB (PCK certificate extension, TD report), find the
matching TCB Info level, TDX module level and QE Identity level and converge their statuses into
one TCB status with advisory IDs. Steps follow ``../shared/vectors/README.md`` ("tcb_status"),
which restates the QVL's ``sgxEvaluateTCB``/``tdxEvaluateTCB`` and ``TDRelaunchCheck``:

1. SGX level: first level (Intel's descending order) with all 16 SGX component SVNs and PCESVN
   less than or equal to the PCK certificate's.
2. TDX level: first level that also has its TDX components less than or equal to TEE_TCB_SVN
   (bytes 0-1 skipped when TEE_TCB_SVN[1] != 0: the TDX module identity judges them).
3. TDX module status (module identity ``TDX_<major>``) converges into the TDX status.
4. TD 1.5 relaunch rule.
5. QE status (QE Identity level by ISVSVN) converges last.

No level found anywhere gives ``TcbNotSupported``: the caller must reject the quote.
This module does not check signatures or applicability of collateral (see :mod:`.verify`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from arca.verifier.dcap.pck import PckExtension
from arca.verifier.dcap.signed_collateral import (
    IdentityLevel,
    QeIdentity,
    TcbInfo,
    TcbLevel,
    TdxModuleIdentity,
)

NOT_SUPPORTED = "TcbNotSupported"
_CONFIG = frozenset({"ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
                     "OutOfDateConfigurationNeeded"})


@dataclass(frozen=True)
class TcbResult:
    status: str
    advisory_ids: tuple[str, ...]
    platform_status: str | None = None     # status of the matched TCB Info level
    tdx_module_status: str | None = None
    qe_status: str | None = None
    detail: str = ""                       # why TcbNotSupported, when it is


def _le(values: Sequence[int], level: Sequence[int], start: int = 0) -> bool:
    """Every level component is less than or equal to the platform's (from ``start``)."""
    return all(values[i] >= level[i] for i in range(start, 16))


def _sgx_match(level: TcbLevel, pck: PckExtension) -> bool:
    return _le(pck.tcb_components, level.sgx_components) and pck.pce_svn >= level.pce_svn


def _identity_level(levels: Iterable[IdentityLevel], svn: int) -> IdentityLevel | None:
    return next((lv for lv in levels if svn >= lv.isv_svn), None)


def module_identity(info: TcbInfo, major: int) -> TdxModuleIdentity | None:
    if major == 0:
        return info.tdx_module
    want = f"TDX_{major:02X}"
    return next((m for m in info.tdx_module_identities if m.id.upper() == want), None)


def _converge(status: str, component: str | None) -> str:
    if component == "Revoked":
        return "Revoked"
    if component == "OutOfDate":
        if status in ("UpToDate", "SWHardeningNeeded"):
            return "OutOfDate"
        if status in ("ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"):
            return "OutOfDateConfigurationNeeded"
    return status


def _uniq(*groups: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for g in groups:
        for a in g:
            seen.setdefault(a, None)
    return tuple(seen)


def _qe(qe: QeIdentity | None, qe_svn: int) -> tuple[IdentityLevel | None, bool]:
    if qe is None:
        return None, True
    lv = _identity_level(qe.levels, qe_svn)
    return lv, lv is not None


def evaluate_sgx(info: TcbInfo, pck: PckExtension, qe: QeIdentity | None,
                 qe_svn: int) -> TcbResult:
    level = next((lv for lv in info.levels if _sgx_match(lv, pck)), None)
    if level is None:
        return TcbResult(NOT_SUPPORTED, (), detail="no TCB level matches the PCK certificate TCB")
    qe_level, ok = _qe(qe, qe_svn)
    if not ok:
        return TcbResult(NOT_SUPPORTED, (), level.status,
                         detail=f"no QE Identity level for QE ISVSVN {qe_svn}")
    qe_status = qe_level.status if qe_level else None
    return TcbResult(_converge(level.status, qe_status),
                     _uniq(level.advisory_ids, qe_level.advisory_ids if qe_level else ()),
                     level.status, None, qe_status)


def evaluate_tdx(info: TcbInfo, pck: PckExtension, tee_tcb_svn: bytes,
                 tee_tcb_svn2: bytes | None, qe: QeIdentity | None, qe_svn: int) -> TcbResult:
    major = tee_tcb_svn[1]
    start = 2 if major > 0 else 0
    sgx_level = next((lv for lv in info.levels if _sgx_match(lv, pck)), None)
    level = next((lv for lv in info.levels if _sgx_match(lv, pck) and lv.tdx_components
                  and _le(tee_tcb_svn, lv.tdx_components, start)), None)
    if level is None or sgx_level is None:
        return TcbResult(NOT_SUPPORTED, (),
                         detail="no TCB level matches the PCK TCB and TEE_TCB_SVN")
    status = level.status
    module_status: str | None = None
    module_adv: tuple[str, ...] = ()
    if major > 0:
        ident = module_identity(info, major)
        if ident is None:
            return TcbResult(NOT_SUPPORTED, (), status,
                             detail=f"no TDX module identity TDX_{major:02X}")
        mlevel = _identity_level(ident.levels, tee_tcb_svn[0])
        if mlevel is None:
            return TcbResult(NOT_SUPPORTED, (), status,
                             detail=f"no {ident.id} level for module SVN {tee_tcb_svn[0]}")
        module_status, module_adv = mlevel.status, mlevel.advisory_ids
        status = _converge(status, module_status)
    qe_level, ok = _qe(qe, qe_svn)
    if not ok:
        return TcbResult(NOT_SUPPORTED, (), level.status, module_status,
                         detail=f"no QE Identity level for QE ISVSVN {qe_svn}")
    qe_status = qe_level.status if qe_level else None
    # TD 1.5 relaunch rule (QVL TDRelaunchCheck): the TD runs on an out-of-date module but the
    # platform has already been updated (TEE_TCB_SVN2 meets the latest level): relaunching the
    # TD is enough.
    if (tee_tcb_svn2 is not None and qe_status != "OutOfDate"
            and sgx_level.status not in ("OutOfDate", "OutOfDateConfigurationNeeded")
            and status in ("OutOfDate", "OutOfDateConfigurationNeeded")
            and module_status == "OutOfDate"
            and _latest(info, tee_tcb_svn2)):
        config = sgx_level.status in _CONFIG or status in _CONFIG
        return TcbResult("TDRelaunchAdvisedConfigurationNeeded" if config else
                         "TDRelaunchAdvised",
                         _uniq(level.advisory_ids, qe_level.advisory_ids if qe_level else (),
                               module_adv),
                         level.status, module_status, qe_status)
    return TcbResult(_converge(status, qe_status),
                     _uniq(level.advisory_ids, qe_level.advisory_ids if qe_level else (),
                           module_adv),
                     level.status, module_status, qe_status)


def _latest(info: TcbInfo, svn2: bytes) -> bool:
    latest = info.levels[0].tdx_components
    if latest is None:
        return False
    if svn2[1] == 0:
        return svn2[0] >= latest[0] and svn2[2] >= latest[2]
    ident = module_identity(info, svn2[1])
    if ident is None or not ident.levels:
        return False
    return svn2[0] >= ident.levels[0].isv_svn and svn2[2] >= latest[2]
