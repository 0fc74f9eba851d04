"""AMD SEV-SNP: report parser (:mod:`.report`), AMD certificate chain (:mod:`.certs`), KDS
client (:mod:`.kds`) and the verifier (:mod:`.verifier`)."""

from arca.verifier.snp.certs import AMD_ARK_SPKI_SHA256
from arca.verifier.snp.report import SnpReport
from arca.verifier.snp.verifier import SnpVerifier

__all__ = ["AMD_ARK_SPKI_SHA256", "SnpReport", "SnpVerifier"]
