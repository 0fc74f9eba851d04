"""Host zone: untrusted by the tenant. OCI runtime, image store, TD launchers, sim TEE."""
