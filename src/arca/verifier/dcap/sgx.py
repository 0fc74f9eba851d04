"""Intel SGX DCAP verifier (``tee = "sgx"``): quote v3 (and v4/v5 with an SGX body).

Claims: ``mrenclave``, ``mrsigner``, ``isv_prod_id``, ``isv_svn``, ``attributes``,
``misc_select``, ``cpu_svn``, ``config_svn``, ``config_id``, ``isv_ext_prod_id``,
``isv_family_id``, ``report_data``, ``init_data`` (= CONFIGID, 64 bytes, all zero when the
enclave was launched without one), ``fmspc``, ``pce_id``, ``format_version``; ``debug`` from
ATTRIBUTES.DEBUG. The verification path is :mod:`arca.verifier.dcap.verify`.
"""

from __future__ import annotations

from typing import Any

from arca.verifier.dcap import tcb as tcbmod
from arca.verifier.dcap.pck import PckExtension
from arca.verifier.dcap.quote import Quote, SgxReportBody
from arca.verifier.dcap.signed_collateral import QeIdentity, TcbInfo
from arca.verifier.dcap.verify import DcapVerifier


def _body(quote: Quote) -> SgxReportBody:
    assert isinstance(quote.body, SgxReportBody)  # guaranteed by parse() tee check
    return quote.body


class SgxVerifier(DcapVerifier):
    tee = "sgx"

    def _values(self, quote: Quote) -> dict[str, Any]:
        b = _body(quote)
        return {
            "mrenclave": b.mr_enclave.hex(), "mrsigner": b.mr_signer.hex(),
            "isv_prod_id": b.isv_prod_id, "isv_svn": b.isv_svn,
            "attributes": b.attributes.hex(), "misc_select": b.misc_select,
            "cpu_svn": b.cpu_svn.hex(), "config_svn": b.config_svn,
            "config_id": b.config_id.hex(), "isv_ext_prod_id": b.isv_ext_prod_id.hex(),
            "isv_family_id": b.isv_family_id.hex(),
            "report_data": b.report_data.hex(), "init_data": b.config_id.hex(),
        }

    def _init_data(self, quote: Quote) -> bytes:
        return _body(quote).config_id

    def _evaluate_with(self, quote: Quote, pck: PckExtension, info: TcbInfo,
                       qe: QeIdentity) -> tcbmod.TcbResult:
        return tcbmod.evaluate_sgx(info, pck, qe, quote.signature.qe_report.body.isv_svn)
