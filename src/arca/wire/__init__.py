"""What crosses zones: messages and formats shared by host, guest and relying party. Imported
by the guest, so part of the TCB: it imports only the standard library and ``cryptography``."""
