"""Review attacks on the agent: hostile error bodies and host inputs must end in one error
line and the documented exit code, never a traceback."""

from __future__ import annotations

import http.server
import threading

import pytest

from arca.guest.agent import fetch_secrets
from arca.guest.evidence import SimDevice
from arca.wire.errors import BrokerUnavailable
from arca.wire.initdata import InitData

from .test_guest_agent import INIT, _run_agent, device, td  # noqa: F401 - fixtures

NESTED = b"[" * 60000


class _NestedError(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_POST(self) -> None:  # noqa: N802
        type(self).hits += 1
        self.send_response(503)
        self.send_header("Content-Length", str(len(NESTED)))
        self.end_headers()
        self.wfile.write(NESTED)

    def log_message(self, *args) -> None:
        pass


def test_deeply_nested_error_body_is_still_a_retried_unavailable_broker(device) -> None:  # noqa: F811
    srv = http.server.HTTPServer(("127.0.0.1", 0), _NestedError)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    init = InitData.parse(
        INIT + f"kbs_url = '{url}'\nagent = '''kbs_retries = 1\nkbs_backoff = 0'''\n".encode())
    try:
        with pytest.raises(BrokerUnavailable, match="2 attempts"):
            fetch_secrets(init, SimDevice(device.path))
    finally:
        srv.shutdown()
    assert _NestedError.hits == 2


@pytest.mark.parametrize("name", ["process.json", "descriptor.json"])
def test_deeply_nested_host_json_is_one_error_line(td, name: str) -> None:  # noqa: F811
    devdir, rundir = td
    (devdir / name).write_bytes(NESTED)
    res = _run_agent(devdir, rundir)
    assert res.returncode == 125, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("arca-agent: error: "), res.stderr
