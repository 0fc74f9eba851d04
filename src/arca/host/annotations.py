"""OCI annotations the host runtime reads (the guest never sees them: not in ``arca.wire``)."""

#: Annotation asking for a TEE backend (``sim``, ``vm``, ``tdx``, ``snp``, ``sgx``, ``none``).
ANNOTATION_TEE = "io.arca.tee"
#: Annotation carrying init-data: base64 of the TOML document, optionally gzip-compressed.
ANNOTATION_INIT_DATA = "io.arca.init-data"
#: Kubernetes CRI marks sandbox (pause) containers with this annotation.
ANNOTATION_CRI_CONTAINER_TYPE = "io.kubernetes.cri.container-type"
#: Guest ports to publish ("tcp/8080,udp/53"): a VM backend forwards them from the container's
#: network namespace into the guest (``arca run -p`` sets it; the sim TD shares the namespace).
ANNOTATION_PORTS = "io.arca.ports"
