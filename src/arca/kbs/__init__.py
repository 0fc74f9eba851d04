"""Relying party: the key broker service (KBS), wire-compatible with Trustee KBS v0.4.0."""
