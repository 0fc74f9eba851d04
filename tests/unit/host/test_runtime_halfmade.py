"""``delete`` of a container whose create was killed inside its first state write (a state
directory without ``state.json``) leaves nothing; real state and odd ids are left alone."""

from __future__ import annotations

import pathlib

import pytest

from arca.host.runtime import state as st


def test_half_made_state_is_removed_and_real_state_kept(tmp_path: pathlib.Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCA_RUN", str(tmp_path))
    half = st.state_path("half").parent
    half.mkdir(parents=True)
    (half / ".state.json.tmp").write_text("{")
    st.save(st.ContainerState("real", "sim", "/b", "creating"))
    st.remove_half_made("half")
    st.remove_half_made("real")
    st.remove_half_made("../x")
    assert not half.exists() and st.load("real") is not None
