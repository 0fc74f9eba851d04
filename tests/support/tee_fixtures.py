"""TEE firmware and published known-answer data, unpacked from Debian packages by
``scripts/tee-fixtures.sh`` (run by ``make setup``). Tests skip cleanly when it is absent."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("ARCA_TEE_FIXTURES", "/var/cache/arca/tee-fixtures")) / "root"
GO_EVENTLOG = ROOT / "usr/share/gocode/src/github.com/google/go-eventlog"
OVMF_AMDSEV = ROOT / "usr/share/ovmf/OVMF.amdsev.fd"
TDVF = ROOT / "usr/share/ovmf/OVMF.inteltdx.ms.fd"
SHIM = ROOT / "usr/lib/shim/shimx64.efi.signed"


def sev_crate_file(rel: str) -> Path:
    """A file of the packaged ``sev`` crate (librust-sev-dev), whatever its version."""
    found = sorted(ROOT.glob(f"usr/share/cargo/registry/sev-*/{rel}"))
    return found[-1] if found else ROOT / "usr/share/cargo/registry/sev-absent" / rel


def fixture(path: Path, sha256: str | None = None) -> Path:
    """``path`` if present (and, when given, with this SHA-256: a newer package version with
    other bytes would make a known answer meaningless), else skip."""
    if not path.is_file():
        pytest.skip(f"{path} absent: run scripts/tee-fixtures.sh")
    if sha256 is not None and hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
        pytest.skip(f"{path} is not the pinned file (sha256 {sha256[:16]}...)")
    return path
