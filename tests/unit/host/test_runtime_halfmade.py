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


@pytest.mark.parametrize("argv", [
    ["--root", "/r", "create", "--bundle", "/b"],
    ["--root", "/r", "run", "--detach", "--bundle", "/b"],  # step 6 of create (lifecycle)
    ["run", "-d", "/b"],
])
def test_an_orphaned_runc_child_of_a_killed_create_is_waited_for(argv: list[str]) -> None:
    """``delete --force`` after ``kill -9`` of create must see create's runc child (or a
    wrapper still starting it) so it does not delete under it; a foreground ``run`` or
    another id is not a create."""
    import subprocess
    import sys

    from arca.host.runtime import lifecycle

    cid = f"inflight-{argv[-2].strip('-')}"
    procs = [subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(5)", *args])
             for args in ([*argv, cid], ["run", cid], [*argv, f"{cid}-other"])]
    try:
        import time

        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not lifecycle.inflight_creates(cid):
            time.sleep(0.01)
        assert lifecycle.inflight_creates(cid) == [procs[0].pid]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert lifecycle.inflight_creates(cid) == []
