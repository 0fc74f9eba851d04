"""The one table of per-TEE facts, read by the host, the guest and the broker: every fact that
differs between TEEs and that more than one zone needs lives here, nowhere else. How to *launch*
a TEE is in :mod:`arca.host.backends`, how to *verify* its evidence in :mod:`arca.verifier`.
In the TCB (the agent imports it): no ``typing``/``dataclasses`` at run time, no I/O."""

from __future__ import annotations

from arca.wire.record import dataclass

#: What a container asks for when it wants no TEE at all (plain runc).
NONE = "none"

# Evidence envelopes (KBS protocol ``tee-evidence.primary_evidence``).
#: The evidence JSON document itself.
DOCUMENT = "document"
#: ``{"quote": "<base64 of the raw quote/report>"}``.
QUOTE = "quote"
#: Trustee's SNP evidence (``deps/verifier/src/snp/mod.rs`` ``SnpEvidence``): the raw report
#: as the ``sev`` crate's JSON (:mod:`arca.wire.snpjson`) in ``{"attestation_report",
#: "cert_chain"}``; Arca's broker also takes :data:`QUOTE`.
SNP_REPORT = "snp-report"

# Where the agent in a TD obtains evidence (``arca.guest.evidence`` maps these to sources).
#: A per-TD unix socket served by the sim platform, bind-mounted into the TD.
SIM_DEVICE = "sim-device"
#: The kernel's configfs-tsm report interface (TDX and SNP guests).
CONFIGFS_TSM = "configfs-tsm"
#: Gramine's ``/dev/attestation`` (SGX enclaves).
GRAMINE = "gramine"
#: No in-TD source (evidence produced by a test client).
NO_SOURCE = ""


@dataclass(frozen=True)
class Tee:
    """Facts about one TEE; see the module docstring."""

    name: str
    #: Hardware-enforced (brokers may affirm it); ``False`` for sim/vm/sample.
    hardware: bool
    #: A container can ask for it (``io.arca.tee``, ``--tee``); ``sample`` is broker-only.
    container: bool
    #: Bytes of the report-data field; the KBS binds SHA-384(runtime-data) zero-padded to it.
    report_data_size: int
    #: Bytes of the init-data field, and its name in the TEE's own specification.
    init_data_size: int
    init_data_field: str
    #: :data:`DOCUMENT`, :data:`QUOTE` or :data:`SNP_REPORT`.
    envelope: str
    #: :data:`SIM_DEVICE`, :data:`CONFIGFS_TSM`, :data:`GRAMINE` or :data:`NO_SOURCE`.
    source: str
    #: configfs-tsm ``provider`` of the guest driver, for :data:`CONFIGFS_TSM`.
    tsm_provider: str = ""
    #: The agent checks the report itself (the sim report format of ``arca.wire.simreport``);
    #: for hardware TEEs only the relying party can (it holds the vendor roots).
    agent_checks_report: bool = False
    #: The report's measurement is of a VM launch (kernel, initramfs, command line), not the
    #: descriptor's; the guest's init checks the descriptor against the measured command line,
    #: and the agent that the measurement is of the command line and vCPUs the VM booted.
    launch_measured: bool = False
    #: The KBS binding of the report data (Trustee's ``kbs/src/attestation/backend.rs``):
    #: SHA-384 of the RFC 8785 runtime-data with ``additional-evidence``, zero-padded to the
    #: field. ``legacy_runtime_data``: without ``additional-evidence``, as KBS protocol 0.4.0
    #: hashed it (Arca's sim guests). ``unpadded_report_data``: the bare digest (Trustee's
    #: ``sample`` verifier compares it exactly).
    legacy_runtime_data: bool = False
    unpadded_report_data: bool = False

    def report_data(self, digest: bytes) -> bytes:
        """``digest`` zero-padded to the field, never cut: a longer one is a caller's bug."""
        if len(digest) > self.report_data_size:
            raise ValueError(f"{self.name} report data holds {self.report_data_size} bytes, "
                             f"got {len(digest)}")
        return digest + bytes(self.report_data_size - len(digest))

    def init_data_hash(self, digest: bytes | None) -> bytes:
        """The init-data field for ``digest`` (zeros without init-data): cut or zero-padded, as
        CoCo/Trustee do (SNP's 32-byte HOST_DATA holds the first 32 bytes of a SHA-384)."""
        size = self.init_data_size
        return bytes(size) if digest is None else digest[:size].ljust(size, b"\0")


#: The table. Row order is the order names are listed in messages.
TEES: dict[str, Tee] = {t.name: t for t in (
    Tee("sim", False, True, 64, 48, "init_data_hash", DOCUMENT, SIM_DEVICE,
        agent_checks_report=True, legacy_runtime_data=True),
    # The vm backend: a plain VM; the sim platform plays its security processor.
    Tee("vm", False, True, 64, 48, "init_data_hash", DOCUMENT, SIM_DEVICE,
        agent_checks_report=True, launch_measured=True),
    Tee("tdx", True, True, 64, 48, "MRCONFIGID", QUOTE, CONFIGFS_TSM, "tdx_guest"),
    Tee("snp", True, True, 64, 32, "HOST_DATA", SNP_REPORT, CONFIGFS_TSM, "sev_guest"),
    Tee("sgx", True, True, 64, 64, "CONFIGID", QUOTE, GRAMINE),
    # CoCo's unsigned test evidence: broker-only, proves nothing.
    Tee("sample", False, False, 64, 48, "init_data", DOCUMENT, NO_SOURCE,
        unpadded_report_data=True),
)}

#: What ``io.arca.tee`` / ``--tee`` may name (``none``: plain runc).
KNOWN_TEES = (*(n for n, t in TEES.items() if t.container), NONE)
#: TEEs whose evidence a hardware vendor signs.
HARDWARE_TEES = tuple(n for n, t in TEES.items() if t.hardware)


def get(name: str) -> Tee:
    """The facts of TEE ``name``; ``KeyError`` if unknown (check input against :data:`TEES`)."""
    return TEES[name]
