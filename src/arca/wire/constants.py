"""Names shared by the host runtime and the guest: fixed in-TD paths."""

from __future__ import annotations

#: Where the read-only guest runtime (interpreter + arca.guest + arca.wire) is mounted in a TD.
GUEST_RUNTIME_MOUNT = "/.arca"
#: tmpfs inside the TD holding Arca's per-TD state; never backed by host disk.
TD_RUN_DIR = "/run/arca"
#: The report the agent obtained at start, for inspection by the workload.
EVIDENCE_PATH = "/run/arca/evidence.json"
#: Directory (bind-mounted, per TD) holding the TEE device socket for the ``sim`` backend.
SIM_DEVICE_DIR = "/run/arca/tee"
SIM_DEVICE_SOCKET = "/run/arca/tee/sim.sock"

