"""Arca: TEE-in-Container confidential containers.

Kept empty on purpose: ``arca-runtime`` sits on containerd's hot path and must not pay for
imports it does not use.
"""

__version__ = "0.1.0"
