"""uvicorn's httptools HTTP/1.1 protocol, with the KBS protocol steps answered from the parser.

A guest's session is three small requests (``auth``, ``attest``, resource ``GET``). Through
ASGI each one costs an asyncio task, an event, a scope and receive/send coroutines, and two
socket writes (headers, then body: two loopback segments and two client wake-ups). Here,
when the request is one of those steps (:meth:`arca.kbs.app.ProtocolFastPath.step`), its
body is collected in the parser callbacks and the answer — the same :class:`Reply` the ASGI
fast path sends — is written as one buffer as soon as the message is complete.

Everything else takes uvicorn's normal path unchanged: any other route, a request while an
ASGI response is still in progress on the connection (so pipelined answers keep their order),
``Expect: 100-continue``, upgrades, HTTP/1.0, a target with a query, ``%``, ``\\`` or ``#``
(the ASGI fast path answers those), and all of it when the app is not a :class:`KbsApp`.
The steps answered here are written to Arca's access log (:mod:`arca.kbs.accesslog`) like
every other request (uvicorn's own access log is off).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from arca.kbs import accesslog
from arca.kbs.app import ProtocolFastPath, Reply, cookie_of, problem_reply
from arca.kbs.problems import KbsProblem

#: Request targets the parser path leaves to ASGI (encoded, odd or with a query).
_UNUSUAL = (b"%", b"?", b"#", b"\\")
_DISCARD = "discard"  # the rest of a refused request body is read and dropped


def find_fast_path(app: Any) -> ProtocolFastPath | None:
    """The app's fast path, looking through uvicorn's wrappers (proxy headers, logging)."""
    for _ in range(8):
        fast = getattr(app, "kbs_fast_path", None)
        if isinstance(fast, ProtocolFastPath):
            return fast
        app = getattr(app, "app", None)
        if app is None:
            break
    return None


class KbsHttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that answers the KBS protocol steps inside the parser callbacks."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._fast = find_fast_path(self.app)
        self._step: str | None = None  # the fast request being read, _DISCARD, or None
        self._target = ""
        self._body = bytearray()
        self._keep = True
        self._started = 0.0

    # -- parser callbacks ---------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        # A keep-alive timer armed by an earlier fast answer in the same read must not close
        # the connection under this request.
        self._unset_keepalive_if_required()
        step = self._fast_step()
        self._step = step
        if step is None:
            super().on_headers_complete()
            return
        self._body.clear()
        self._keep = self.parser.should_keep_alive()
        self._started = time.perf_counter()
        limit = ProtocolFastPath.limit(step)
        for name, value in self.headers:
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                self._refuse(step)
                return

    def on_body(self, body: bytes) -> None:
        if self._step is None:
            super().on_body(body)
        elif self._step != _DISCARD:
            self._body += body
            if len(self._body) > ProtocolFastPath.limit(self._step):
                self._refuse(self._step)

    def on_message_complete(self) -> None:
        step, self._step = self._step, None
        if step is None:
            super().on_message_complete()
        elif step != _DISCARD:
            assert self._fast is not None
            body = bytes(self._body)
            self._body.clear()
            self._answer(self._fast.reply(step, self._target, self._target.encode(),
                                          cookie_of(self.headers), body))

    def send_400_response(self, msg: str) -> None:
        """A request the HTTP parser refuses (a byte HTTP/1.1 forbids in the request line or a
        header, a broken chunk...) is malformed input like any other: the same RFC 7807
        ``SerdeError`` document, then close (the byte stream cannot be resynchronised)."""
        self._keep = False
        self._answer(problem_reply(KbsProblem("SerdeError", f"malformed HTTP request: {msg}")))

    # -- helpers ------------------------------------------------------------------------------
    def _fast_step(self) -> str | None:
        if self._fast is None or self.transport.is_closing():
            return None
        if self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
            return None  # an ASGI answer is pending on this connection: keep the order
        if self.expect_100_continue or self.parser.should_upgrade():
            return None
        if self.parser.get_http_version() != "1.1":
            return None
        url = self.url
        if not url.startswith(b"/") or not url.isascii() or any(c in url for c in _UNUSUAL):
            return None
        has_auth = any(name == b"authorization" for name, _ in self.headers)
        step = self._fast.step(self.parser.get_method().decode("ascii"), url.decode("ascii"),
                               has_auth)
        if step is not None:
            self._target = url.decode("ascii")
        return step

    def _refuse(self, step: str) -> None:
        """413 now; the rest of the body is dropped, the connection stays usable."""
        self._step = _DISCARD
        self._body.clear()
        self._answer(ProtocolFastPath.too_big(step))

    def _answer(self, reply: Reply) -> None:
        if self.transport.is_closing():
            return
        content = [STATUS_LINE[reply.status]]
        for name, value in (*self.server_state.default_headers, *reply.headers()):
            content += [name, b": ", value, b"\r\n"]
        if not self._keep:
            content.append(b"connection: close\r\n")
        content += [b"\r\n", reply.body]
        self.transport.write(b"".join(content))
        self.server_state.total_requests += 1
        if accesslog.enabled():
            accesslog.record(self.client, self.parser.get_method().decode("ascii"),
                             self._target, "1.1", reply.status, self._started)
        if not self._keep:
            self.transport.close()
        else:
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler)
