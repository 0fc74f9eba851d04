"""Arca's own HTTP/1.1 server for the KBS: asyncio + ``httptools``' public parser API.

A guest's session is three small requests (``auth``, ``attest``, resource ``GET``). Through
ASGI each one costs an asyncio task, an event, a scope, receive/send coroutines and two socket
writes. So when a request is one of those steps (:meth:`ProtocolFastPath.step`), its body is
collected in the parser callbacks and the answer — the same :class:`Reply` the ASGI fast path
sends — is written as one buffer as soon as the message is complete.

Everything else is handed to the ASGI application (FastAPI) with a documented ASGI call,
``await app(scope, receive, send)`` (ASGI 3, HTTP spec 2.3): any other route, any request while
an ASGI answer is still owed on the connection (so pipelined answers keep their order),
``Expect: 100-continue``, upgrades, HTTP/1.0, a target with a query, ``%``, ``\\`` or ``#``
(the ASGI fast path in :class:`KbsApp` answers those). Requests the parser refuses, and heads
over :data:`MAX_HEAD_BYTES`, get an RFC 7807 ``SerdeError`` and the connection is closed (the
byte stream cannot be resynchronised). See docs/adr/0029-kbs-http-server.md for why this
replaced a subclass of uvicorn's internal protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import re
import signal
import ssl
import time
import urllib.parse
from collections import deque
from email.utils import formatdate
from typing import Any, cast

import httptools

from arca.kbs import accesslog
from arca.kbs.app import ASGIApp, Message, ProtocolFastPath, Reply, cookie_of, problem_reply
from arca.kbs.problems import KbsProblem
from arca.wire.errors import ArcaError, InvalidInput

log = logging.getLogger("arca.kbs.http")

#: Request line plus headers: larger heads are refused (httptools itself sets no bound).
MAX_HEAD_BYTES = 64 * 1024
#: Buffered request body of an ASGI request above which the socket stops being read until
#: the application consumes it.
HIGH_WATER = 64 * 1024
#: An idle connection (no request in progress, nothing owed) is closed after this long.
KEEP_ALIVE_SECONDS = 30.0
#: On SIGTERM, requests in progress get this long to finish before their connections close.
GRACEFUL_SECONDS = 3.0
SERVER_HEADER = b"arca-kbs"
#: Pending connections the kernel queues for the workers to accept.
BACKLOG = 2048

#: Request targets the parser path leaves to ASGI (encoded, odd or with a query).
_UNUSUAL = (b"%", b"?", b"#", b"\\")
_DISCARD = "discard"  # the rest of a refused request body is read and dropped
# RFC 9110 token characters / field-value characters: what an application may put in a head.
_BAD_NAME = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")


def _status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (code, phrase)


STATUS_LINE = {code: _status_line(code) for code in range(100, 600)}


class _Clock:
    """The ``date``/``server`` header lines, re-rendered at most once a second."""

    second = -1
    lines = b""

    @classmethod
    def head(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.second = now
            cls.lines = (b"server: " + SERVER_HEADER + b"\r\ndate: "
                         + formatdate(now, usegmt=True).encode() + b"\r\n")
        return cls.lines


class _HeadTooLarge(InvalidInput):
    """Raised inside a parser callback: aborts parsing (httptools wraps it)."""


class AsgiProtocolError(ArcaError):
    """The application broke the ASGI HTTP message order or sent an impossible head."""


class Shared:
    """What one worker's connections share: the app, its fast path, TLS, open connections."""

    def __init__(self, app: ASGIApp, fast: ProtocolFastPath | None, tls: bool) -> None:
        self.app = app
        self.fast = fast
        self.scheme = "https" if tls else "http"
        self.connections: set[HttpProtocol] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False


class _Exchange:
    """One request handed to the ASGI application, and the state of its answer."""

    def __init__(self, conn: HttpProtocol, scope: dict[str, Any], keep_alive: bool,
                 expect_continue: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.waiting_continue = expect_continue
        self.body = bytearray()
        self.more_body = True
        self.event = asyncio.Event()
        self.disconnected = False
        self.started = False
        self.complete = False
        self.head = b""  # written together with the first body chunk: one segment
        self.chunked = False
        self.remaining = 0
        self.status = 0

    async def run(self) -> None:
        try:
            await self.conn.state.app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:  # stopping after the grace period: nothing to answer
            self.conn.transport.close()
            raise
        except BaseException as exc:  # the application's failure must not kill the server
            log.error("exception in ASGI application", exc_info=exc)
            if not self.started:
                self.keep_alive = False
                with contextlib.suppress(BaseException):
                    reply = problem_reply(KbsProblem("InternalError", "internal error"))
                    await self.send({"type": "http.response.start", "status": reply.status,
                                     "headers": reply.headers()})
                    await self.send({"type": "http.response.body", "body": reply.body})
            elif not self.complete:
                self.conn.transport.close()
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            if not self.complete and not self.disconnected:
                log.error("ASGI application returned without completing its response")
                self.conn.transport.close()
        finally:
            self.conn.exchange_done(self)

    async def receive(self) -> Message:
        conn = self.conn
        if self.waiting_continue and not conn.transport.is_closing():
            conn.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_continue = False
        if not self.disconnected and not self.complete:
            conn.resume_reading()
            await self.event.wait()
            self.event.clear()
        if self.disconnected or self.complete:
            return {"type": "http.disconnect"}
        message = {"type": "http.request", "body": bytes(self.body), "more_body": self.more_body}
        self.body.clear()
        return message

    async def send(self, message: Message) -> None:
        conn = self.conn
        if conn.write_paused is not None and not self.disconnected:
            await conn.write_paused.wait()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise AsgiProtocolError(f"expected http.response.start, got {kind!r}")
            self._start(message)
        elif not self.complete:
            if kind != "http.response.body":
                raise AsgiProtocolError(f"expected http.response.body, got {kind!r}")
            self._body(message.get("body", b""), message.get("more_body", False))
        else:
            raise AsgiProtocolError(f"{kind!r} sent after the response was complete")

    def _start(self, message: Message) -> None:
        self.started = True
        self.waiting_continue = False
        self.status = status = int(message["status"])
        content = [STATUS_LINE[status], _Clock.head()]
        length: int | None = None
        close_sent = False
        for name, value in message.get("headers", ()):
            if _BAD_NAME.search(name) or _BAD_VALUE.search(value):
                raise AsgiProtocolError("invalid HTTP header from the application")
            name = name.lower()
            if name == b"content-length" and length is None:
                length = int(value)
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.chunked = True
            elif name == b"connection" and b"close" in [
                    t.strip().lower() for t in value.split(b",")]:
                self.keep_alive = False
                close_sent = True
            content += [name, b": ", value, b"\r\n"]
        if not self.keep_alive and not close_sent:
            content.append(b"connection: close\r\n")
        head_only = self.scope["method"] == "HEAD" or status in (204, 304)
        if length is None and not self.chunked and not head_only:
            # No length: chunked on HTTP/1.1; HTTP/1.0 answers are ended by closing.
            if self.scope["http_version"] == "1.1":
                self.chunked = True
                content.append(b"transfer-encoding: chunked\r\n")
            else:
                self.keep_alive = False
        self.remaining = -1 if length is None else length
        content.append(b"\r\n")
        self.head = b"".join(content)

    def _body(self, body: bytes, more: bool) -> None:
        if self.scope["method"] == "HEAD":
            data = b""
        elif self.chunked:
            data = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + (
                b"" if more else b"0\r\n\r\n")
        else:
            data = body
            if self.remaining >= 0:
                if len(body) > self.remaining:
                    raise AsgiProtocolError("response body longer than its Content-Length")
                self.remaining -= len(body)
        if self.head:
            data, self.head = self.head + data, b""
        transport = self.conn.transport
        if data:
            transport.write(data)
        if not more:
            if self.remaining > 0 and self.scope["method"] != "HEAD":
                raise AsgiProtocolError("response body shorter than its Content-Length")
            self.complete = True
            self.event.set()
            if not self.keep_alive:
                transport.close()


class HttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: protocol steps from the parser callbacks, the rest over ASGI."""

    def __init__(self, state: Shared) -> None:
        self.state = state
        self.fast = state.fast
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        with contextlib.suppress(AttributeError):  # httptools < 0.6.3
            # Answer a request even when the client sent more after "Connection: close".
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.active_at = 0.0  # last byte received or last answer completed (loop time)
        self.write_paused: asyncio.Event | None = None
        self.reading_paused = False
        # ASGI exchanges: the one running, those waiting behind it (pipelining), the one whose
        # request is being parsed.
        self.current: _Exchange | None = None
        self.queue: deque[_Exchange] = deque()
        self.parsing: _Exchange | None = None
        self.broken: str | None = None  # a parser error to answer once the queue is empty
        # The request being parsed.
        self.in_message = False
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.expect_continue = False
        self.step: str | None = None  # protocol step being read, _DISCARD, or None
        self.target = ""
        self.body = bytearray()
        self.keep = True
        self.started = 0.0

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.client = _addr(transport.get_extra_info("peername"))
        self.server = _addr(transport.get_extra_info("sockname"))
        self.state.connections.add(self)
        self.active_at = self.loop.time()
        self.timer = self.loop.call_later(KEEP_ALIVE_SECONDS, self._idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for ex in (self.current, *self.queue):
            if ex is not None and not ex.complete:
                ex.disconnected = True
            if ex is not None:
                ex.event.set()
        self.queue.clear()
        if self.write_paused is not None:
            self.write_paused.set()

    def data_received(self, data: bytes) -> None:
        # One timer per connection, re-armed only when it fires: a timer per read or per
        # answer costs more than the protocol step's HTTP handling.
        self.active_at = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The request asked to switch protocols; the KBS speaks none: answer it, then close.
            self._stop_after_queue()
        except httptools.HttpParserError as exc:
            # An exception raised in a callback comes back as HttpParserCallbackError with
            # the original as its context (httptools' documented behaviour).
            cause = exc.__context__
            if isinstance(cause, _HeadTooLarge):
                self._malformed(f"request head exceeds {MAX_HEAD_BYTES} bytes")
            elif cause is None or isinstance(cause, (ValueError, httptools.HttpParserError)):
                self._malformed(str(cause or exc) or type(exc).__name__)
            else:  # a bug of ours, not the client's: keep the trace, still answer
                log.error("error handling a request", exc_info=cause)
                self._malformed("unprocessable request")

    def eof_received(self) -> bool | None:
        return None  # close once the answers owed are written (asyncio's default)

    def pause_writing(self) -> None:
        self.write_paused = asyncio.Event()

    def resume_writing(self) -> None:
        if self.write_paused is not None:
            self.write_paused.set()
            self.write_paused = None

    # -- parser callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.in_message = True
        self.url = b""
        self.headers = []
        self.head_size = 0
        self.expect_continue = False
        self.step = None
        self.parsing = None

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)
        if self.head_size > MAX_HEAD_BYTES:
            raise _HeadTooLarge("request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_HEAD_BYTES:
            raise _HeadTooLarge("request head too large")
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        step = self._fast_step()
        self.step = step
        if step is not None:
            self.body.clear()
            self.keep = parser.should_keep_alive() and not self.state.closing
            self.started = time.perf_counter()
            limit = ProtocolFastPath.limit(step)
            for name, value in self.headers:
                if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                    self._refuse(step)
                    return
            return
        version = parser.get_http_version()
        url = httptools.parse_url(self.url)
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": version, "server": self.server, "client": self.client,
            "scheme": self.state.scheme, "method": parser.get_method().decode("ascii"),
            "root_path": "", "path": path, "raw_path": raw_path,
            "query_string": url.query or b"", "headers": self.headers,
        }
        ex = _Exchange(self, scope,
                       version != "1.0" and parser.should_keep_alive() and not self.state.closing,
                       self.expect_continue)
        self.parsing = ex
        if self.current is None:
            self._start(ex)
        else:
            self.queue.append(ex)  # answered after the one in progress: keep the order
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        step = self.step
        if step is not None:
            if step != _DISCARD:
                self.body += body
                if len(self.body) > ProtocolFastPath.limit(step):
                    self._refuse(step)
            return
        ex = self.parsing
        if ex is None or ex.complete:
            return  # the answer is out already: the rest of the body is dropped
        ex.body += body
        if len(ex.body) > HIGH_WATER:
            self.pause_reading()
        ex.event.set()

    def on_message_complete(self) -> None:
        self.in_message = False
        step, self.step = self.step, None
        if step is not None:
            if step != _DISCARD:
                assert self.fast is not None
                body = bytes(self.body)
                self.body.clear()
                self._answer(self.fast.reply(step, self.target, self.target.encode(),
                                             cookie_of(self.headers), body))
            return
        ex, self.parsing = self.parsing, None
        if ex is not None and not ex.complete:
            ex.more_body = False
            ex.event.set()

    # -- fast path -----------------------------------------------------------------------------
    def _fast_step(self) -> str | None:
        fast = self.fast
        if fast is None or self.transport.is_closing():
            return None
        if self.current is not None or self.queue:
            return None  # an ASGI answer is pending on this connection: keep the order
        parser = self.parser
        if self.expect_continue or parser.should_upgrade() or parser.get_http_version() != "1.1":
            return None
        url = self.url
        if not url.startswith(b"/") or not url.isascii() or any(c in url for c in _UNUSUAL):
            return None
        has_auth = any(name == b"authorization" for name, _ in self.headers)
        step = fast.step(parser.get_method().decode("ascii"), url.decode("ascii"), has_auth)
        if step is not None:
            self.target = url.decode("ascii")
        return step

    def _refuse(self, step: str) -> None:
        """413 now; the rest of the body is read and dropped, the connection stays usable."""
        self.step = _DISCARD
        self.body.clear()
        self._answer(ProtocolFastPath.too_big(step))

    def _answer(self, reply: Reply, method: str | None = None) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        content = [STATUS_LINE[reply.status], _Clock.head()]
        for name, value in reply.headers():
            content += [name, b": ", value, b"\r\n"]
        if not self.keep:
            content.append(b"connection: close\r\n")
        content += [b"\r\n", reply.body]
        transport.write(b"".join(content))
        if accesslog.enabled():
            accesslog.record(self.client, method or self.parser.get_method().decode("ascii"),
                             self.target, "1.1", reply.status, self.started)
        if not self.keep:
            transport.close()

    # -- ASGI path -----------------------------------------------------------------------------
    def _start(self, ex: _Exchange) -> None:
        self.current = ex
        task = self.loop.create_task(ex.run())
        self.state.tasks.add(task)
        task.add_done_callback(self.state.tasks.discard)

    def exchange_done(self, ex: _Exchange) -> None:
        if self.current is ex:
            self.current = None
        if self.transport.is_closing():
            return
        if self.queue:
            self._start(self.queue.popleft())
            if not self.queue:
                self.resume_reading()
            return
        if self.broken is not None:
            self._malformed(self.broken)
            return
        self.resume_reading()
        self.active_at = self.loop.time()

    # -- connection control --------------------------------------------------------------------
    def _malformed(self, why: str) -> None:
        """A request the parser refuses is malformed input like any other: an RFC 7807
        ``SerdeError``, then close (the byte stream cannot be resynchronised). Answers owed
        to earlier pipelined requests go first."""
        self.pause_reading()
        if self.current is not None or self.queue:
            self.broken = why
            return
        self.keep = False
        self.started = time.perf_counter()
        self.target = self.url[:accesslog.MAX_PATH].decode("latin-1") or "-"
        self._answer(problem_reply(KbsProblem("SerdeError", f"malformed HTTP request: {why}")),
                     "-")
        self.transport.close()

    def _stop_after_queue(self) -> None:
        self.pause_reading()
        last = self.queue[-1] if self.queue else self.current
        if last is not None:
            last.keep_alive = False
        else:
            self.transport.close()

    def pause_reading(self) -> None:
        if not self.reading_paused and not self.transport.is_closing():
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.broken is None and not self.transport.is_closing():
            self.reading_paused = False
            self.transport.resume_reading()

    def _idle(self) -> None:
        """Close a connection that owes nothing and got no byte for KEEP_ALIVE_SECONDS (a
        request trickling in counts as idle too: it owes nothing yet)."""
        if self.current is not None or self.queue:
            self.active_at = self.loop.time()  # idle time counts from the answer
        left = self.active_at + KEEP_ALIVE_SECONDS - self.loop.time()
        if left <= 0:
            self.timer = None
            self.transport.close()
        else:
            self.timer = self.loop.call_later(left, self._idle)

    def shutdown(self) -> None:
        """Graceful stop: close if nothing is owed, else close after the answers owed."""
        if self.current is None and not self.queue and not self.in_message:
            self.transport.close()
            return
        for ex in (self.current, *self.queue):
            if ex is not None:
                ex.keep_alive = False
        self.keep = False


def _addr(info: Any) -> tuple[str, int] | None:
    if isinstance(info, (tuple, list)) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return None


class LifespanError(ArcaError):
    """The application refused to start (``lifespan.startup.failed``)."""


class Lifespan:
    """The ASGI lifespan protocol (spec 2.0): one call of the application for the process's
    life, told ``startup`` before serving and ``shutdown`` after. An application that does
    not speak lifespan (raises at once) is served without it, as the spec allows."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.outbox: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": {}}
        try:
            await self.app(scope, self.inbox.get, self.outbox.put)
        except Exception as exc:  # noqa: BLE001 - "lifespan not supported" per the spec
            log.debug("ASGI lifespan ended: %r", exc)
        finally:
            self.outbox.put_nowait({"type": "ended"})

    async def phase(self, name: str) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())
        elif self.task.done():
            return
        await self.inbox.put({"type": f"lifespan.{name}"})
        if name == "shutdown":  # a stop must not hang on an application that never answers
            try:
                message = await asyncio.wait_for(self.outbox.get(), GRACEFUL_SECONDS)
            except TimeoutError:
                log.warning("ASGI lifespan shutdown did not complete in %.0f s", GRACEFUL_SECONDS)
                self.task.cancel()
                return
        else:
            message = await self.outbox.get()
        if message["type"] == f"lifespan.{name}.failed":
            raise LifespanError(f"ASGI lifespan {name} failed: {message.get('message', '')}")


async def serve_forever(app: ASGIApp, sock: Any, ssl_context: ssl.SSLContext | None) -> None:
    """Serve ``app`` on the listening ``sock`` until SIGTERM/SIGINT, then stop gracefully."""
    loop = asyncio.get_running_loop()
    fast = getattr(app, "kbs_fast_path", None)
    state = Shared(app, fast if isinstance(fast, ProtocolFastPath) else None,
                   ssl_context is not None)
    life = Lifespan(app)
    await life.phase("startup")
    server = await loop.create_server(lambda: HttpProtocol(state), sock=sock, ssl=ssl_context,
                                      backlog=BACKLOG)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        state.closing = True
        server.close()
        for conn in list(state.connections):
            conn.shutdown()
        deadline = loop.time() + GRACEFUL_SECONDS
        while (state.tasks or state.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for task in list(state.tasks):
            task.cancel()
        for conn in list(state.connections):
            conn.transport.abort()
        await life.phase("shutdown")
        accesslog.flush()
