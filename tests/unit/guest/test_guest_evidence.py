"""Evidence sources: the sim device client over a real unix socket, configfs-tsm on a fake tree,
and the ``arca-evidence`` command."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arca.guest import evidence as ev
from arca.guest.evidence import ConfigfsTsm, SimDevice
from arca.verifier.base import Expected
from arca.verifier.sim import SimVerifier
from arca.wire.errors import EvidenceError
from arca.wire.simreport import SimEvidence
from tests.support.guest_simdevice import SimDeviceServer


@pytest.fixture()
def device(tmp_path: pathlib.Path):
    server = SimDeviceServer(str(tmp_path / "sim.sock"), bytes(range(48)))
    yield server
    server.close()


def test_sim_device_returns_verifiable_evidence(device: SimDeviceServer) -> None:
    rd = os.urandom(64)
    raw = SimDevice(device.path).get_evidence(rd)
    report = SimEvidence.from_bytes(raw).report()
    assert report.report_data == rd and report.measurement == bytes(range(48))
    claims = SimVerifier(trusted_roots=[device.root_pem()]).verify(
        raw, expected=Expected(report_data=rd))
    assert claims.tee == "sim"
    assert device.requests == [rd]


def test_sim_device_error_answer(device: SimDeviceServer) -> None:
    device.error = "no such TD"
    with pytest.raises(EvidenceError, match="refused: no such TD"):
        SimDevice(device.path).get_evidence(bytes(64))


def test_sim_device_missing_socket(tmp_path: pathlib.Path) -> None:
    with pytest.raises(EvidenceError, match="sim device .*nope"):
        SimDevice(str(tmp_path / "nope")).get_evidence(bytes(64))


@pytest.mark.parametrize("answer", [b"garbage\n", b'{"evidence": "!!"}\n', b"[]\n", b""])
def test_sim_device_malformed_answers(tmp_path: pathlib.Path, answer: bytes) -> None:
    path = str(tmp_path / "bad.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        conn.recv(4096)
        conn.sendall(answer)
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with pytest.raises(EvidenceError, match="malformed answer"):
        SimDevice(path, timeout=5).get_evidence(bytes(64))
    t.join()
    srv.close()


def test_sim_device_times_out_on_a_silent_device(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "silent.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)
    with pytest.raises(EvidenceError, match="timed out"):
        SimDevice(path, timeout=0.3).get_evidence(bytes(64))
    srv.close()


def test_report_data_must_be_64_bytes(device: SimDeviceServer) -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        SimDevice(device.path).get_evidence(b"short")


class FakeTsm(ConfigfsTsm):
    """Emulates configfs: attribute files appear on mkdir, vanish on rmdir."""

    provider = "tdx_guest"
    seen: list[bytes] = []

    def _mkdir(self, path: str) -> None:  # type: ignore[override]
        os.mkdir(path)
        for name, value in (("provider", self.provider + "\n"), ("generation", "1\n"),
                            ("outblob", "QUOTE-BYTES")):
            pathlib.Path(path, name).write_text(value)

    def _rmdir(self, path: str) -> None:  # type: ignore[override]
        inblob = pathlib.Path(path, "inblob")
        self.seen.append(inblob.read_bytes() if inblob.exists() else b"")
        for f in pathlib.Path(path).iterdir():
            f.unlink()
        os.rmdir(path)


def test_configfs_tsm_round_trip(tmp_path: pathlib.Path) -> None:
    tsm = FakeTsm("tdx", base=str(tmp_path))
    tsm.seen = []
    rd = os.urandom(64)
    assert tsm.get_evidence(rd) == b"QUOTE-BYTES"
    assert tsm.seen == [rd]
    assert list(tmp_path.iterdir()) == []  # the entry is removed again


def test_configfs_tsm_refuses_another_provider(tmp_path: pathlib.Path) -> None:
    tsm = FakeTsm("snp", base=str(tmp_path))
    with pytest.raises(EvidenceError, match="provider is 'tdx_guest'"):
        tsm.get_evidence(bytes(64))
    assert list(tmp_path.iterdir()) == []


def test_configfs_tsm_auto_learns_the_tee(tmp_path: pathlib.Path) -> None:
    tsm = FakeTsm(base=str(tmp_path))
    tsm.provider = "sev_guest"
    tsm.get_evidence(bytes(64))
    assert tsm.tee == "snp"


def test_configfs_tsm_without_kernel_support(tmp_path: pathlib.Path) -> None:
    with pytest.raises(EvidenceError, match="configfs-tsm"):
        ConfigfsTsm("tdx", base=str(tmp_path / "missing")).get_evidence(bytes(64))
    with pytest.raises(ValueError):
        ConfigfsTsm("sgx")


def test_arca_evidence_command(tmp_path: pathlib.Path, device: SimDeviceServer,
                               monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    stored = ev.evidence_document("sim", bytes(64), b"{}")
    (tmp_path / "evidence.json").write_bytes(stored)
    monkeypatch.setattr(ev, "EVIDENCE_PATH", str(tmp_path / "evidence.json"))
    monkeypatch.setattr(ev, "SIM_DEVICE_SOCKET", device.path)
    assert ev.main([]) == 0
    assert capsys.readouterr().out.encode() == stored
    assert ev.main(["--report-data", "ab" * 64]) == 0
    doc = json.loads(capsys.readouterr().out)
    report = SimEvidence.from_bytes(base64.b64decode(doc["evidence"])).report()
    assert report.report_data == bytes.fromhex("ab" * 64) and doc["tee"] == "sim"
    assert ev.main(["--report-data", "zz"]) == 1
    assert "arca-evidence: error:" in capsys.readouterr().err
    assert ev.main(["--bogus"]) == 2


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 st.builds(lambda v: json.dumps(v).encode(),
                           st.dictionaries(st.sampled_from(["evidence", "error", "x"]),
                                           st.one_of(st.text(max_size=40), st.integers(),
                                                     st.none(), st.lists(st.integers())),
                                           max_size=3))))
def test_fuzz_sim_answer_parser(raw: bytes) -> None:
    try:
        out = ev.parse_sim_answer(raw, "/dev/sim")
    except EvidenceError as e:
        assert "/dev/sim" in str(e)
    else:
        assert isinstance(out, bytes)
