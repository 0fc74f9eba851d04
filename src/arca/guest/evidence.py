"""Evidence sources inside a TD (:class:`SimDevice`, :class:`ConfigfsTsm`) and the
``arca-evidence`` command (docs/guest.md). Sources fetch; they do not verify."""

from __future__ import annotations

import binascii
import errno
import json
import os
import socket
import sys

from arca.wire.constants import EVIDENCE_PATH, SIM_DEVICE_SOCKET
from arca.wire.errors import ArcaError, EvidenceError
from arca.wire.simreport import MAX_EVIDENCE_BYTES, REPORT_DATA_SIZE
from arca.wire.tees import CONFIGFS_TSM, SIM_DEVICE, TEES

TYPE_CHECKING = False  # ``typing`` costs ms per agent start; mypy alone needs Protocol
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol
else:
    Protocol = object

TSM_REPORT_DIR = "/sys/kernel/config/tsm/report"
#: configfs-tsm ``provider`` names per Arca TEE name (from the table of TEE facts).
TSM_PROVIDERS = {n: t.tsm_provider for n, t in TEES.items() if t.source == CONFIGFS_TSM}


class EvidenceSource(Protocol):
    tee: str

    def get_evidence(self, report_data: bytes) -> bytes: ...


def _check_report_data(report_data: bytes) -> None:
    if len(report_data) != REPORT_DATA_SIZE:
        raise ValueError(f"report data must be {REPORT_DATA_SIZE} bytes, got {len(report_data)}")


class SimDevice:
    """The sim platform's per-TD socket, one JSON line each way; in a ``vm`` guest the guest's
    init serves it, relaying to the platform over the VM's control port (``tee = "vm"``)."""

    def __init__(self, path: str = SIM_DEVICE_SOCKET, timeout: float = 10.0,
                 tee: str = "sim") -> None:
        self.path, self.timeout, self.tee = path, timeout, tee

    def get_evidence(self, report_data: bytes) -> bytes:
        _check_report_data(report_data)
        request = json.dumps({"report_data": report_data.hex()}).encode() + b"\n"
        chunks: list[bytes] = []
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.settimeout(self.timeout)
                s.connect(self.path)
                s.sendall(request)
                # base64 grows evidence by 4/3; the bound keeps a broken device from
                # exhausting the agent's memory.
                while (chunk := s.recv(65536)) and sum(map(len, chunks)) <= 2 * MAX_EVIDENCE_BYTES:
                    chunks.append(chunk)
            finally:
                s.close()
        except OSError as e:
            raise EvidenceError(f"sim device {self.path}: {e}") from None
        return parse_sim_answer(b"".join(chunks), self.path)


def parse_sim_answer(raw: bytes, path: str) -> bytes:
    """``{"evidence": "<base64>"}`` or ``{"error": "..."}`` -> raw evidence bytes."""
    try:
        answer = json.loads(raw)
        if "error" in answer:
            raise EvidenceError(f"sim device {path} refused: {str(answer['error'])[:500]}")
        return binascii.a2b_base64(answer["evidence"], strict_mode=True)
    except (ValueError, KeyError, TypeError) as e:
        raise EvidenceError(f"sim device {path}: malformed answer ({e})") from None


class ConfigfsTsm:
    """configfs-tsm (Linux ≥ 6.7): mkdir an entry, write ``inblob``, read ``outblob`` (and
    ``auxblob``: an SNP host's certificate table, appended to the report as the verifier
    takes it); the ``generation`` counter detects a concurrent writer meanwhile."""

    def __init__(self, tee: str = "auto", base: str = TSM_REPORT_DIR) -> None:
        # "auto": take the TEE the kernel's provider names (for arca-evidence).
        if tee != "auto" and tee not in TSM_PROVIDERS:
            raise ValueError(f"configfs-tsm has no provider for tee {tee!r}")
        self.tee, self.base = tee, base

    def get_evidence(self, report_data: bytes) -> bytes:
        _check_report_data(report_data)
        entry = os.path.join(self.base, f"arca-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            self._mkdir(entry)
            try:
                provider = _read(entry, "provider").decode().strip()
                tee = {v: k for k, v in TSM_PROVIDERS.items()}.get(provider)
                if tee is None or self.tee not in ("auto", tee):
                    raise EvidenceError(f"configfs-tsm provider is {provider!r}, expected "
                                        f"{TSM_PROVIDERS.get(self.tee, 'a known one')!r}")
                self.tee = tee
                with open(os.path.join(entry, "inblob"), "wb") as f:
                    f.write(report_data)
                before = _read(entry, "generation")
                blob = _read(entry, "outblob")
                try:
                    blob += _read(entry, "auxblob")
                except OSError:  # no auxblob (TDX, kernel < 6.7's) or none from the host
                    pass
                if _read(entry, "generation") != before:
                    raise EvidenceError("configfs-tsm report changed while being read")
                return blob
            finally:
                self._rmdir(entry)
        except OSError as e:
            why = {errno.ENOENT: "this kernel has no configfs-tsm (CONFIG_TSM_REPORTS, "
                                 "configfs mounted)",
                   errno.ENXIO: "no TEE report provider: not a TDX/SNP guest, or its "
                                "tdx-guest/sev-guest driver is not loaded"}.get(e.errno or 0, "")
            raise EvidenceError(f"configfs-tsm {self.base}: {why or e}") from None

    # configfs creates the attribute files on mkdir and drops them on rmdir (tests emulate it).
    _mkdir = staticmethod(os.mkdir)
    _rmdir = staticmethod(os.rmdir)


#: The agent's evidence source per kind of the table (``arca.wire.tees.Tee.source``):
#: ``(tee, device directory) -> source``; the sim platform's per-TD socket also plays a VM's
#: security processor. Gramine's ``/dev/attestation`` (SGX) is not here yet.
SOURCES: dict[str, Callable[[str, str], EvidenceSource]] = {
    SIM_DEVICE: lambda tee, device_dir: SimDevice(os.path.join(device_dir, "sim.sock"), tee=tee),
    CONFIGFS_TSM: lambda tee, _device_dir: ConfigfsTsm(tee),
}


def _read(entry: str, name: str) -> bytes:
    with open(os.path.join(entry, name), "rb") as f:
        return f.read()


def evidence_document(tee: str, report_data: bytes, evidence: bytes,
                      runtime_data: object = None) -> bytes:
    doc = {"tee": tee, "report_data": report_data.hex(),
           "evidence": binascii.b2a_base64(evidence, newline=False).decode(),
           "runtime_data": runtime_data}
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode() + b"\n"


def main(argv: list[str]) -> int:
    """``arca-evidence [--report-data HEX]``: the start-up evidence, or fresh evidence."""
    try:
        if not argv:
            with open(EVIDENCE_PATH, "rb") as f:
                sys.stdout.buffer.write(f.read())
            return 0
        if len(argv) != 2 or argv[0] != "--report-data":
            print("usage: arca-evidence [--report-data HEX]", file=sys.stderr)
            return 2
        data = bytes.fromhex(argv[1]).ljust(REPORT_DATA_SIZE, b"\0")
        source: EvidenceSource = (SimDevice(SIM_DEVICE_SOCKET) if os.path.exists(
            SIM_DEVICE_SOCKET) else ConfigfsTsm())
        evidence = source.get_evidence(data)  # first: an "auto" source learns its tee here
        sys.stdout.buffer.write(evidence_document(source.tee, data, evidence))
        return 0
    except (ArcaError, OSError, ValueError) as e:
        print(f"arca-evidence: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
