"""configfs-tsm in a TDX/SNP guest: the SNP certificate table from ``auxblob`` travels with the
report; a kernel without configfs-tsm or without a TEE provider is one clear error."""

from __future__ import annotations

import errno
import os
import pathlib

import pytest

from arca.wire.errors import EvidenceError
from tests.unit.guest.test_guest_evidence import FakeTsm


class AuxTsm(FakeTsm):
    provider = "sev_guest"

    def _mkdir(self, path: str) -> None:  # type: ignore[override]
        super()._mkdir(path)
        pathlib.Path(path, "auxblob").write_bytes(b"CERT-TABLE")


def test_snp_auxblob_is_appended_to_the_report(tmp_path: pathlib.Path) -> None:
    assert AuxTsm("snp", base=str(tmp_path)).get_evidence(os.urandom(64)) == \
        b"QUOTE-BYTESCERT-TABLE"
    assert list(tmp_path.iterdir()) == []


def test_without_auxblob_the_report_alone(tmp_path: pathlib.Path) -> None:
    assert FakeTsm("tdx", base=str(tmp_path)).get_evidence(bytes(64)) == b"QUOTE-BYTES"


class NoProvider(FakeTsm):
    def _mkdir(self, path: str) -> None:  # type: ignore[override]
        raise OSError(errno.ENXIO, os.strerror(errno.ENXIO), path)


def test_no_tee_provider_is_one_clear_error(tmp_path: pathlib.Path) -> None:
    """What a TCG guest's kernel answers (research/vm_backends.md §3.1: mkdir gives ENXIO)."""
    with pytest.raises(EvidenceError, match="no TEE report provider: not a TDX/SNP guest"):
        NoProvider("tdx", base=str(tmp_path)).get_evidence(bytes(64))


def test_no_configfs_tsm_is_one_clear_error(tmp_path: pathlib.Path) -> None:
    from arca.guest.evidence import ConfigfsTsm

    with pytest.raises(EvidenceError, match="this kernel has no configfs-tsm"):
        ConfigfsTsm("snp", base=str(tmp_path / "missing")).get_evidence(bytes(64))
