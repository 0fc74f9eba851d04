"""AMD SEV-SNP: report parser (:mod:`.report`), extended-report certificate table
(:mod:`.certtable`), AMD certificate chain and ARK pins (:mod:`.certs`), KDS client
(:mod:`.kds`) and the verifier (:mod:`.verifier`).

Usage, offline with a directory holding ``vcek.pem``, ``ask.pem`` and ``ark.pem``::

    from arca.verifier.base import Expected
    from arca.verifier.collateral import DirectoryCollateral
    from arca.verifier.snp import SnpVerifier

    verifier = SnpVerifier(DirectoryCollateral("certs/"))   # reuse it: chains are cached
    claims = verifier.verify(report_bytes, expected=Expected(report_data=nonce_hash))
    claims.values["measurement"], claims.debug

Failures raise :class:`arca.wire.errors.EvidenceError` subclasses naming the check
(``signature``, ``chain``, ``root``, ``expired``, ``tcb``, ``binding``, ``malformed``) or
:class:`arca.errors.CollateralError` when certificates are missing.
"""

from arca.verifier.snp.certs import AMD_ARK_SPKI_SHA256
from arca.verifier.snp.report import SnpReport
from arca.verifier.snp.verifier import SnpVerifier

__all__ = ["AMD_ARK_SPKI_SHA256", "SnpReport", "SnpVerifier"]
