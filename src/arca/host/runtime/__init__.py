"""``arca-runtime``: a runc-compatible OCI runtime that puts TEE containers in a trust domain.

For a container that asks for a TEE it rewrites the bundle (guest runtime, TEE device, agent as
first process), registers the launch descriptor with the TEE platform and then delegates to the
real ``runc``; every other container goes straight to ``runc``. Namespaces, cgroups, seccomp,
terminals and stdio stay runc's job. The entry point is :func:`arca.host.runtime.cli.main`.

Modules here import only the standard library and ``arca.wire`` at start-up: ``arca-runtime``
runs on containerd's hot path (several times per container), so import cost is start-up cost.
"""
