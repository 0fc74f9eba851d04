"""The backend seam: the registry, the sim backend's reference values, the table of TEE facts."""

from __future__ import annotations

import hashlib
import pathlib

import pytest

from arca.host import backends
from arca.host.backends.base import BackendUnavailable, LaunchInputs
from arca.host.guestruntime import GuestRuntime
from arca.host.simtee.platform import init_data_hash
from arca.host.treedigest import rootfs_digest
from arca.wire import tees
from arca.wire.descriptor import LaunchDescriptor, ProcessSpec
from arca.wire.errors import ConfigError, InvalidInput
from arca.wire.initdata import InitDataError

INIT_DATA = b'version = "0.1.0"\nalgorithm = "sha384"\n[data]\nkbs_url = "http://127.0.0.1:1"\n'
PROCESS = ProcessSpec(("/bin/app",), "/", 0, 0, ("PATH=/bin",))


@pytest.fixture(autouse=True)
def isolated(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCA_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("ARCA_RUN", str(tmp_path / "run"))


def test_unknown_and_unavailable_tees_are_refused_by_name() -> None:
    with pytest.raises(InvalidInput, match="unknown TEE 'nope'.*known: sim, vm, tdx"):
        backends.get("nope")
    with pytest.raises(InvalidInput, match="unknown TEE 'none'"):
        backends.get("none")
    with pytest.raises(InvalidInput, match="unknown TEE 'sample'"):  # broker-only
        backends.get("sample")
    missing = [n for n in tees.KNOWN_TEES if n != tees.NONE and not backends.available(n)]
    for name in missing:
        with pytest.raises(BackendUnavailable, match=f"'{name}' has no backend"):
            backends.get(name)
    assert issubclass(BackendUnavailable, ConfigError)


def test_sim_reference_is_the_descriptor_hash(tmp_path: pathlib.Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "bin" / "app").write_text("#!/bin/sh\necho hi\n")
    gr = GuestRuntime(tmp_path / "gr", "sha256:" + "1" * 64, "ld.so")
    backend = backends.get("sim")
    backend.check_host()
    ref = backend.reference(LaunchInputs(rootfs, PROCESS, INIT_DATA, gr))
    want = LaunchDescriptor("sim", gr.digest, rootfs_digest(rootfs), PROCESS)
    assert ref.descriptor == want and ref.measurement == want.measurement().hex()
    assert ref.init_data_hash == hashlib.sha384(INIT_DATA).hexdigest()  # 48 bytes: all of it
    assert ref == backend.reference_for(want, INIT_DATA, {})
    assert backend.claims(ref) == {"tee": "sim", "measurement": ref.measurement,
                                   "init_data": ref.init_data_hash}
    without = backend.reference_for(want, None, {})
    assert without.init_data_hash == "00" * 48
    with pytest.raises(InitDataError):
        backend.reference_for(want, b"not toml [", {})


def test_table_rules() -> None:
    digest = hashlib.sha384(INIT_DATA).digest()
    assert tees.get("snp").init_data_hash(digest) == digest[:32]  # HOST_DATA: cut
    assert tees.get("sgx").init_data_hash(digest) == digest + bytes(16)  # CONFIGID: padded
    assert tees.get("tdx").init_data_hash(None) == bytes(48)
    assert tees.get("sim").report_data(digest) == digest + bytes(16)
    with pytest.raises(ValueError, match="holds 64 bytes"):
        tees.get("tdx").report_data(bytes(65))
    # The init-data rule is the one InitData (and so the sim platform) applies.
    assert tees.get("sim").init_data_hash(digest) == init_data_hash(INIT_DATA)
    assert tees.KNOWN_TEES == ("sim", "vm", "tdx", "snp", "sgx", "none")
    assert set(tees.HARDWARE_TEES) == {"tdx", "snp", "sgx"}
    for t in tees.TEES.values():
        assert t.envelope in (tees.DOCUMENT, tees.QUOTE, tees.SNP_REPORT)
        assert (t.source == tees.CONFIGFS_TSM) == bool(t.tsm_provider)
