"""Intel TDX DCAP verifier (``tee = "tdx"``): quote v4 (TD report 1.0) and v5 (TD 1.0 / 1.5).

Claims: ``mrtd``, ``rtmr0``..``rtmr3``, ``mrconfigid``, ``mrowner``, ``mrownerconfig``,
``td_attributes``, ``xfam``, ``tee_tcb_svn`` (+ ``tee_tcb_svn2``, ``mr_servicetd`` for TD 1.5),
``mr_seam``, ``mrsigner_seam``, ``seam_attributes``, ``report_data``, ``init_data``
(= MRCONFIGID), ``fmspc``, ``pce_id``, ``format_version``; ``debug`` from TDATTRIBUTES.DEBUG.

Beyond the shared path (:mod:`arca.verifier.dcap.verify`) it checks that the TDX module is
Intel's: MRSIGNERSEAM and SEAMATTRIBUTES (under the mask) against ``tdxModule`` (module major
version 0) or the module identity ``TDX_<major>`` of the TCB Info.
"""

from __future__ import annotations

from typing import Any

from arca.errors import TcbError
from arca.verifier.dcap import tcb as tcbmod
from arca.verifier.dcap.pck import PckExtension
from arca.verifier.dcap.quote import Quote, TdReportBody
from arca.verifier.dcap.signed_collateral import QeIdentity, TcbInfo
from arca.verifier.dcap.verify import DcapVerifier


def _body(quote: Quote) -> TdReportBody:
    assert isinstance(quote.body, TdReportBody)  # guaranteed by parse() tee check
    return quote.body


class TdxVerifier(DcapVerifier):
    tee = "tdx"

    def _values(self, quote: Quote) -> dict[str, Any]:
        b = _body(quote)
        values: dict[str, Any] = {
            "mrtd": b.mr_td.hex(),
            **{f"rtmr{i}": r.hex() for i, r in enumerate(b.rtmrs)},
            "mrconfigid": b.mr_config_id.hex(), "mrowner": b.mr_owner.hex(),
            "mrownerconfig": b.mr_owner_config.hex(), "td_attributes": b.td_attributes.hex(),
            "xfam": b.xfam.hex(), "tee_tcb_svn": b.tee_tcb_svn.hex(),
            "mr_seam": b.mr_seam.hex(), "mrsigner_seam": b.mr_signer_seam.hex(),
            "seam_attributes": b.seam_attributes.hex(),
            "report_data": b.report_data.hex(), "init_data": b.mr_config_id.hex(),
        }
        if b.tee_tcb_svn2 is not None and b.mr_service_td is not None:
            values["tee_tcb_svn2"] = b.tee_tcb_svn2.hex()
            values["mr_servicetd"] = b.mr_service_td.hex()
        return values

    def _init_data(self, quote: Quote) -> bytes:
        return _body(quote).mr_config_id

    def _evaluate_with(self, quote: Quote, pck: PckExtension, info: TcbInfo,
                       qe: QeIdentity) -> tcbmod.TcbResult:
        b = _body(quote)
        major = b.tee_tcb_svn[1]
        ident = tcbmod.module_identity(info, major)
        if ident is not None:
            seam = bytes(a & m for a, m in zip(b.seam_attributes, ident.attributes_mask,
                                               strict=True))
            want = bytes(a & m for a, m in zip(ident.attributes, ident.attributes_mask,
                                               strict=True))
            if b.mr_signer_seam != ident.mrsigner or seam != want:
                raise TcbError(f"tdx_module: MRSIGNERSEAM/SEAMATTRIBUTES "
                               f"{b.mr_signer_seam.hex()}/{b.seam_attributes.hex()} do not match "
                               f"TCB Info {ident.id}", tee=self.tee, field="tdx_module",
                               expected=ident.mrsigner.hex(), actual=b.mr_signer_seam.hex())
        # A missing module identity is TcbNotSupported, decided by the level matching.
        return tcbmod.evaluate_tdx(info, pck, b.tee_tcb_svn, b.tee_tcb_svn2, qe,
                                   quote.signature.qe_report.body.isv_svn)
