"""Evidence verifiers, one module per TEE behind one interface (see :mod:`arca.verifier.base`).

Verification is not appraisal: a verifier checks signatures, chains and bindings and reports
claims (TCB status included); policy in the key broker decides what is acceptable.
"""
