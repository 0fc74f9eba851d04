"""OCI annotations the host runtime reads (the guest never sees them: not in ``arca.wire``)."""

#: Annotation asking for a TEE backend (``sim``, ``vm``, ``tdx``, ``snp``, ``sgx``, ``none``).
ANNOTATION_TEE = "io.arca.tee"
#: Annotation carrying init-data: base64 of the TOML document, optionally gzip-compressed.
ANNOTATION_INIT_DATA = "io.arca.init-data"
#: Kubernetes CRI marks sandbox (pause) containers with this annotation.
ANNOTATION_CRI_CONTAINER_TYPE = "io.kubernetes.cri.container-type"
