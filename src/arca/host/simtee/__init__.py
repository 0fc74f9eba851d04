"""The ``sim`` TEE platform: a host daemon playing the TEE hardware, for development and CI.

It owns an ECDSA P-384 platform key certified by a local "Arca sim root", keeps the launch
descriptor registered for each TD, and serves one socket per TD (bind-mounted only into that
container) that answers report requests about that TD alone. ``sim`` protects a TD against
other containers, **never against the host**: the host owns the platform key.

Modules: :mod:`.locations` (files), :mod:`.platform` (keys, reports), :mod:`.daemon` (the
server), :mod:`.client` (what ``arca-runtime`` and the CLI use; no ``cryptography`` import).
"""
