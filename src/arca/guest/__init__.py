"""Guest zone: the code that runs inside each trust domain. This is Arca's TCB. Imports only the
standard library, ``cryptography`` and ``arca.wire`` (enforced by a test)."""
