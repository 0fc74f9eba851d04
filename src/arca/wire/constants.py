"""Names shared by the host runtime and the guest: annotations and fixed in-TD paths."""

from __future__ import annotations

#: TEE backends a container may ask for; ``none`` means plain runc (the table of TEE facts).
from arca.wire.tees import KNOWN_TEES as KNOWN_TEES

#: Annotation asking for a TEE backend (``sim``, ``vm``, ``tdx``, ``snp``, ``sgx``, ``none``).
ANNOTATION_TEE = "io.arca.tee"
#: Annotation carrying init-data: base64 of the TOML document, optionally gzip-compressed.
ANNOTATION_INIT_DATA = "io.arca.init-data"
#: Kubernetes CRI marks sandbox (pause) containers with this annotation.
ANNOTATION_CRI_CONTAINER_TYPE = "io.kubernetes.cri.container-type"

#: Where the read-only guest runtime (interpreter + arca.guest + arca.wire) is mounted in a TD.
GUEST_RUNTIME_MOUNT = "/.arca"
#: tmpfs inside the TD holding Arca's per-TD state; never backed by host disk.
TD_RUN_DIR = "/run/arca"
#: The report the agent obtained at start, for inspection by the workload.
EVIDENCE_PATH = "/run/arca/evidence.json"
#: Directory (bind-mounted, per TD) holding the TEE device socket for the ``sim`` backend.
SIM_DEVICE_DIR = "/run/arca/tee"
SIM_DEVICE_SOCKET = "/run/arca/tee/sim.sock"

