"""``--restart``: which exits the monitor answers with a new run (podman's policies)."""

from __future__ import annotations

import pytest

from arca.errors import InvalidInput
from arca.host.containers.engine import parse_restart, restart_due
from arca.host.containers.state import ContainerRecord


def _rec(policy: str, code: int | None = 1, count: int = 0, *, stopped: bool = False,
         status: str = "exited") -> ContainerRecord:
    return ContainerRecord(id="a" * 64, name="c", image="i", image_digest="d", tee="none",
                           args=(), created="", status=status, exit_code=code,
                           restart_policy=policy, restart_count=count, manual_stop=stopped)


@pytest.mark.parametrize(("rec", "due"), [
    (_rec("no"), False),
    (_rec("on-failure", 1, 50), True),
    (_rec("on-failure", 0), False),
    (_rec("on-failure:2", 1, 1), True),
    (_rec("on-failure:2", 1, 2), False),
    (_rec("on-failure:0", 1, 9), True),  # podman: 0 is no limit
    (_rec("always", 0, 99), True),
    (_rec("unless-stopped", 0), True),
    (_rec("always", stopped=True), False),  # arca stop is never undone
    (_rec("always", status="error"), False),  # Arca could not start it: no loop
])
def test_restart_due(rec: ContainerRecord, due: bool) -> None:
    assert restart_due(rec) is due


@pytest.mark.parametrize("bad", ["sometimes", "always:2", "on-failure:x", "on-failure:-1", ""])
def test_bad_policies_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInput, match="--restart"):
        parse_restart(bad)


def test_old_records_have_no_policy() -> None:
    rec = ContainerRecord.from_json({"id": "b" * 64, "name": "old", "image": "i",
                                     "image_digest": "d", "tee": "none", "args": [],
                                     "created": ""})
    assert (rec.restart_policy, rec.restart_count, rec.manual_stop) == ("no", 0, False)
