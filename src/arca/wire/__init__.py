"""What crosses zones: messages and formats shared by host, guest and relying party.

Imported by the guest, so it is part of the TCB: standard library and ``cryptography`` only,
and nothing from ``arca.host``, ``arca.kbs`` or ``arca.verifier``.
"""
