"""Issue 13, item 15: the sim daemon serves creates of different containers at once, so one
slow create (a large rootfs hashed on first use; here a ``config.json`` that is a FIFO, as
slow as the test wants) does not stall every other TD create on the node. Requests about the
same container stay in order, and a create asking for another environment waits rather than
run under the first one's."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import time
from collections.abc import Iterator

import pytest

from arca.host.runtime.fastcreate import ENV_KEYS, code_stamp
from tests.integration.test_runtime_lifecycle import (
    NEEDS_ROOT_AND_RUNC,
    RUN,
    Runtime,
    assert_clean,
    sim_runtime,
)

pytestmark = [pytest.mark.integration, NEEDS_ROOT_AND_RUNC]

#: A small create takes milliseconds once the guest runtime is built; serialised behind the
#: stuck create it never finishes until the test releases that one.
BOUND_S = 15.0


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with sim_runtime(tmp_path_factory, "pc") as runtime:
        yield runtime


def _request(rt: Runtime, op: str, bundle: pathlib.Path, cid: str,
             env: dict[str, str] | None = None) -> dict[str, object]:
    """A front end's request for step ``op`` of ``create``; ``create-done`` with runc failed
    (status 1) undoes the create."""
    return {"op": op, "stamp": code_stamp(), **({"rc": 1} if op == "create-done" else {}),
            "argv": rt.argv("create", "--bundle", str(bundle), cid)[1:], "cwd": "/",
            "umask": 0o22,
            "env": env if env is not None else {k: os.environ[k] for k in ENV_KEYS
                                                if k in os.environ}}


def _send(req: dict[str, object]) -> socket.socket:
    from arca.host.simtee import locations

    s = socket.socket(socket.AF_UNIX)
    s.settimeout(BOUND_S)
    s.connect(str(locations.control_socket()))
    s.sendall(json.dumps(req).encode() + b"\n")
    return s


def _answer(s: socket.socket, timeout: float = BOUND_S) -> dict[str, object]:
    s.settimeout(timeout)
    buf = b""
    try:
        while chunk := s.recv(65536):
            buf += chunk
    finally:
        s.close()
    return dict(json.loads(buf))


def _unanswered(s: socket.socket, for_s: float = 0.5) -> bool:
    s.settimeout(for_s)
    try:
        s.recv(1)
    except TimeoutError:
        return True
    return False


def _stuck_create(rt: Runtime, cid: str) -> tuple[socket.socket, int]:
    """A create of ``cid`` the daemon is inside of, reading a FIFO until the test writes it."""
    b = rt.tmp / "bundles" / cid
    b.mkdir(parents=True)
    os.mkfifo(b / "config.json")
    s = _send(_request(rt, "create", b, cid))
    deadline = time.monotonic() + BOUND_S
    while True:
        try:
            return s, os.open(b / "config.json", os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: the daemon has not opened it yet
            assert time.monotonic() < deadline, "the daemon never started the slow create"
            time.sleep(0.01)


def test_a_create_is_not_held_up_by_another_containers_create(rt: Runtime) -> None:
    from arca.host.simtee import client

    client.ensure_running()
    warm = f"pc-warm-{RUN}"  # guest runtime built and rootfs digest cached before timing
    b = rt.bundle(warm, ["true"])
    # The first create builds the guest runtime: seconds, more on a loaded machine.
    assert client.request(_request(rt, "create", b, warm), timeout=300)["then"] == "create-done"
    assert client.request(_request(rt, "create-done", b, warm))["rc"] == 1
    slow, quick = f"pc-slow-{RUN}", f"pc-quick-{RUN}"
    ctl, fifo = _stuck_create(rt, slow)
    try:
        b = rt.bundle(quick, ["true"])
        t = time.monotonic()
        answer = _answer(_send(_request(rt, "create", b, quick)))
        took = time.monotonic() - t
        assert answer["do"] == "spawn" and answer["then"] == "create-done", answer
        assert took < BOUND_S
        assert _unanswered(ctl)  # the slow one is still being served
        # the same container's requests wait for it, in order
        same = _send({"op": "unregister", "td_id": slow})
        assert _unanswered(same)
        # a create under another environment waits too (the environment is process-wide)
        other_env = {**{k: os.environ[k] for k in ENV_KEYS if k in os.environ},
                     "ARCA_ROOT": str(rt.tmp / "other-root")}
        other = _send(_request(rt, "create", rt.bundle(f"pc-other-{RUN}", ["true"]),
                               f"pc-other-{RUN}", env=other_env))
        assert _unanswered(other)
    finally:
        os.write(fifo, b"not json")  # the slow create goes on and fails on what it read
        os.close(fifo)
    answer = _answer(ctl)
    assert answer["do"] == "error" and "malformed config.json" in str(answer["msg"])
    assert _answer(same) == {"ok": True, "was_registered": False}
    assert _answer(other)["do"] == "spawn"
    for cid, env in ((quick, None), (f"pc-other-{RUN}", other_env)):
        undo = _request(rt, "create-done", rt.tmp / "bundles" / cid, cid, env=env)
        assert client.request(undo)["rc"] == 1
    assert_clean(rt, quick)
    assert_clean(rt, slow)
    assert (rt.tmp / "other-root" / "guest-runtime").is_dir()  # it ran under its own
