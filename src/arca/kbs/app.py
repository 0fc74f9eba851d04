"""The KBS HTTP API (FastAPI): thin handlers over :class:`arca.kbs.service.KbsService`.

Protocol (Trustee KBS v0.4.0): ``POST /kbs/v0/auth``, ``POST /kbs/v0/attest``,
``GET /kbs/v0/resource/<repo>/<type>/<tag>``. Administration (EdDSA admin JWT as Bearer):
``POST``/``DELETE`` and admin ``GET`` of resources, ``GET``/``POST /kbs/v0/resource-policy`` and
``/kbs/v0/attestation-policy``, ``GET``/``POST /kbs/v0/reference-values``,
``DELETE /kbs/v0/reference-values/<name>``. Operations: ``/.well-known/kbs-token-jwks.json``,
``/healthz``, ``/metrics``, ``/openapi.json``.

Request bodies are bounded by a pure ASGI middleware (413 before the handler runs) and parsed
by the service, so every malformed input gets one of the documented problem answers.

The three steps of a guest's session (``auth``, ``attest`` and a resource ``GET`` without an
``Authorization`` header) are served by :class:`ProtocolFastPath`, in front of the whole
FastAPI stack (:class:`KbsApp`), and in ``arca kbs serve`` straight from the HTTP parser
(:mod:`arca.kbs.httpserver`): same service calls, same answers, without the routing,
middleware and ASGI machinery. Everything else goes through FastAPI.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import cookie_parser

from arca.kbs import accesslog
from arca.kbs.config import KbsConfig
from arca.kbs.problems import KbsProblem
from arca.kbs.service import KbsService
from arca.wire.kbs_protocol import SESSION_COOKIE

log = logging.getLogger("arca.kbs")

#: Body limits. Evidence with certificate chains stays well below 512 KiB; secrets are small.
MAX_RESOURCE_BYTES = 1024 * 1024
MAX_ATTEST_BYTES = 512 * 1024
MAX_POLICY_BODY_BYTES = 512 * 1024
MAX_OTHER_BYTES = 64 * 1024
JWKS_PATH = "/.well-known/kbs-token-jwks.json"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _limit_for(path: str) -> int:
    if path.startswith("/kbs/v0/resource/"):
        return MAX_RESOURCE_BYTES
    if path == "/kbs/v0/attest":
        return MAX_ATTEST_BYTES
    if path.endswith("-policy"):
        return MAX_POLICY_BODY_BYTES
    return MAX_OTHER_BYTES


def _problem(p: KbsProblem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(p.body(), status_code=p.status, media_type="application/problem+json",
                        headers=headers)


class BodyLimit:
    """Refuse bodies over the path's limit with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = _limit_for(scope["path"])
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.isdigit() or int(value) > limit:
                    await _problem(_too_big(limit))(scope, receive, send)
                    return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _TooBig()
            return msg

        started = False

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, bounded, tracking_send)
        except _TooBig:
            if not started:
                await _problem(_too_big(limit))(scope, receive, send)


class _TooBig(Exception):
    pass


def _too_big(limit: int) -> KbsProblem:
    return KbsProblem("PayloadTooLarge", f"request body exceeds {limit} bytes")


_RESOURCE_PREFIX = "/kbs/v0/resource/"
_STEP_LIMITS = {"auth": MAX_OTHER_BYTES, "attest": MAX_ATTEST_BYTES,
                "resource": MAX_RESOURCE_BYTES}
_COOKIE_PLACEHOLDER = "COOKIEVALUE"


def _json_bytes(content: Any) -> bytes:
    """The body Starlette's ``JSONResponse`` renders for ``content``, byte for byte."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class Reply:
    """A complete answer of the protocol fast path: status, content type, body, cookie."""

    status: int
    content_type: bytes
    body: bytes
    set_cookie: bytes | None = None

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The headers Starlette would send (``content-length``, ``content-type``, cookie)."""
        out = [(b"content-length", b"%d" % len(self.body)), (b"content-type", self.content_type)]
        if self.set_cookie is not None:
            out.append((b"set-cookie", self.set_cookie))
        return out


def problem_reply(p: KbsProblem) -> Reply:
    return Reply(p.status, b"application/problem+json", _json_bytes(p.body()))


class ProtocolFastPath:
    """Serve ``auth``, ``attest`` and the guest's resource ``GET`` straight from the service.

    Answers are those of the FastAPI routes below (same service calls, problem documents, body
    limits and cookie attributes); requests it does not recognise, and any resource request
    carrying an ``Authorization`` header (admin or Bearer token), go to FastAPI unchanged. It
    runs in front of the whole FastAPI stack (:class:`KbsApp`), and
    :mod:`arca.kbs.httpserver` calls :meth:`reply` straight from the HTTP parser.
    """

    def __init__(self, svc: KbsService, cfg: KbsConfig) -> None:
        self.svc = svc
        self.cfg = cfg
        # The Set-Cookie value exactly as Starlette formats it, around the session id.
        probe = Response()
        probe.set_cookie(SESSION_COOKIE, _COOKIE_PLACEHOLDER, max_age=cfg.session_timeout,
                         path="/", httponly=True, secure=not cfg.insecure_http,
                         samesite="strict")
        before, _, after = probe.headers["set-cookie"].partition(_COOKIE_PLACEHOLDER)
        self._cookie_around = (before.encode("latin-1"), after.encode("latin-1"))

    @staticmethod
    def step(method: str, path: str, has_authorization: bool) -> str | None:
        """Which protocol step a request is (``auth``, ``attest``, ``resource``), if any."""
        if method == "POST" and path in ("/kbs/v0/auth", "/kbs/v0/attest"):
            return path[8:]
        if method == "GET" and path.startswith(_RESOURCE_PREFIX) and not has_authorization:
            return "resource"
        return None

    @staticmethod
    def limit(step: str) -> int:
        return _STEP_LIMITS[step]

    @staticmethod
    def too_big(step: str) -> Reply:
        return problem_reply(_too_big(_STEP_LIMITS[step]))

    def reply(self, step: str, path: str, raw_path: bytes, cookie: str | None,
              body: bytes) -> Reply:
        """The answer to one protocol request; never raises."""
        try:
            return self._reply(step, path, raw_path, cookie, body)
        except KbsProblem as p:
            return problem_reply(p)
        except Exception as exc:  # same answer as FastAPI's catch-all handler
            log.exception("internal error")
            return problem_reply(KbsProblem("InternalError",
                                            f"internal error: {type(exc).__name__}"))

    def _reply(self, step: str, path: str, raw_path: bytes, cookie: str | None,
               body: bytes) -> Reply:
        svc = self.svc
        if step == "auth":
            challenge, issued = svc.auth(body)
            before, after = self._cookie_around
            return Reply(200, b"application/json", _json_bytes(challenge.to_json()),
                         before + issued.encode("latin-1") + after)
        if step == "attest":
            return Reply(200, b"application/json",
                         _json_bytes({"token": svc.attest(cookie, body)}))
        if b"%" in raw_path or b"\\" in raw_path:  # as _resource_tail
            raise KbsProblem("InvalidRequestPath", "percent-encoded resource paths are refused")
        return Reply(200, b"application/json",
                     _json_bytes(svc.release(path[len(_RESOURCE_PREFIX):], None, cookie)))

    async def asgi(self, scope: Scope, receive: Receive, send: Send, step: str) -> None:
        """Serve ``step`` over ASGI (TestClient, or a request the parser path declined)."""
        limit = _STEP_LIMITS[step]
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                await _send_reply(send, self.too_big(step))
                return
        chunks, seen = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                await _send_reply(send, self.too_big(step))
                return
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        reply = self.reply(step, scope["path"], scope.get("raw_path", b""),
                           cookie_of(scope["headers"]), b"".join(chunks))
        await _send_reply(send, reply)


async def _send_reply(send: Send, reply: Reply) -> None:
    await send({"type": "http.response.start", "status": reply.status,
                "headers": reply.headers()})
    await send({"type": "http.response.body", "body": reply.body})


def cookie_of(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The session cookie, parsed as Starlette's ``Request.cookies`` does."""
    cookies: dict[str, str] = {}
    for name, value in headers:
        if name == b"cookie":
            cookies.update(cookie_parser(value.decode("latin-1")))
    return cookies.get(SESSION_COOKIE)


class KbsApp(FastAPI):
    """FastAPI with the protocol fast path in front of its whole middleware stack."""

    kbs_fast_path: ProtocolFastPath

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and accesslog.enabled():
            await accesslog.asgi(scope, lambda s: self._serve(scope, receive, s), send)
        else:
            await self._serve(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            step = self.kbs_fast_path.step(
                scope["method"], scope["path"],
                any(k == b"authorization" for k, _ in scope["headers"]))
            if step is not None:
                await self.kbs_fast_path.asgi(scope, receive, send, step)
                return
        await super().__call__(scope, receive, send)  # type: ignore[arg-type]


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise KbsProblem("TokenNotFound", "Authorization header must be 'Bearer <token>'")
    return token.strip()


def _resource_tail(request: Request, path: str) -> str:
    # Percent-encoding is never needed in repo/type/tag: refuse it outright, so encoded
    # separators or dot-segments cannot be smuggled past the segment checks.
    raw = request.scope.get("raw_path", b"")
    if b"%" in raw or b"\\" in raw:
        raise KbsProblem("InvalidRequestPath", "percent-encoded resource paths are refused")
    return path


def _body_doc(schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {media: {"schema": schema}}}}


_B64_POLICY = {"type": "object", "required": ["policy"],
               "properties": {"policy": {"type": "string", "format": "byte"},
                              "type": {"type": "string"}, "policy_id": {"type": "string"}}}
_JWK = {"type": "object", "properties": {"kty": {"type": "string"}}}
_AUTH_DOC = _body_doc({"type": "object", "required": ["version", "tee"], "properties": {
    "version": {"type": "string"}, "tee": {"type": "string"},
    "extra-params": {"type": "object"}}})
_ATTEST_DOC = _body_doc({"type": "object", "required": ["runtime-data", "tee-evidence"],
                         "properties": {
    "runtime-data": {"type": "object", "required": ["nonce", "tee-pubkey"], "properties": {
        "nonce": {"type": "string"}, "tee-pubkey": _JWK}},
    "tee-evidence": {"type": "object", "required": ["primary_evidence"], "properties": {
        "primary_evidence": {}, "additional_evidence": {"type": "string"}}},
    "init-data": {"type": "object", "required": ["format", "body"], "properties": {
        "format": {"type": "string"}, "body": {"type": "string"}}}}})
_REF_DOC = _body_doc({"type": "object", "required": ["name", "values"], "properties": {
    "name": {"type": "string"}, "values": {"type": "array", "items": {"type": "string"}}}})
_RAW_DOC = _body_doc({"type": "string", "format": "binary"}, "application/octet-stream")


def create_app(cfg: KbsConfig, service: KbsService | None = None) -> KbsApp:
    svc = service or KbsService(cfg)
    secure = not cfg.insecure_http
    app = KbsApp(title="Arca KBS", version="0.4.0",
                 description="Key broker service, wire-compatible with Trustee KBS v0.4.0")
    app.state.service = svc
    app.kbs_fast_path = ProtocolFastPath(svc, cfg)

    @app.exception_handler(KbsProblem)
    async def _on_problem(_: Request, exc: KbsProblem) -> Response:
        return _problem(exc)

    @app.exception_handler(RequestValidationError)
    async def _on_validation(_: Request, exc: RequestValidationError) -> Response:
        return _problem(KbsProblem("SerdeError", f"malformed request: {exc.errors()[:3]}"))

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(_: Request, exc: StarletteHTTPException) -> Response:
        name = {404: "InvalidRequestPath", 405: "MethodNotAllowed"}.get(exc.status_code,
                                                                        "SerdeError")
        return _problem(KbsProblem(name, str(exc.detail)))

    @app.exception_handler(Exception)
    async def _on_crash(_: Request, exc: Exception) -> Response:
        log.exception("internal error")
        return _problem(KbsProblem("InternalError", f"internal error: {type(exc).__name__}"))

    # -- protocol ---------------------------------------------------------------------------
    @app.post("/kbs/v0/auth", openapi_extra=_AUTH_DOC, tags=["protocol"])
    async def auth(request: Request) -> Response:
        challenge, cookie = svc.auth(await request.body())
        resp = JSONResponse(challenge.to_json())
        resp.set_cookie(SESSION_COOKIE, cookie, max_age=cfg.session_timeout, path="/",
                        httponly=True, secure=secure, samesite="strict")
        return resp

    @app.post("/kbs/v0/attest", openapi_extra=_ATTEST_DOC, tags=["protocol"])
    async def attest(request: Request) -> Response:
        token = svc.attest(request.cookies.get(SESSION_COOKIE), await request.body())
        return JSONResponse({"token": token})

    @app.get("/kbs/v0/resource/{path:path}", tags=["protocol"])
    async def get_resource(request: Request, path: str) -> Response:
        tail = _resource_tail(request, path)
        bearer = _bearer(request)
        if svc.is_admin_token(bearer):
            svc.check_admin(bearer, request.url.path)
            data = await run_in_threadpool(svc.admin_get_resource, tail)
            return Response(data, media_type="application/octet-stream")
        return JSONResponse(svc.release(tail, bearer, request.cookies.get(SESSION_COOKIE)))

    # -- administration ----------------------------------------------------------------------
    async def admin(request: Request) -> None:
        svc.check_admin(_bearer(request), request.url.path)

    @app.post("/kbs/v0/resource/{path:path}", openapi_extra=_RAW_DOC, tags=["admin"])
    async def set_resource(request: Request, path: str) -> Response:
        await admin(request)
        tail = _resource_tail(request, path)
        await run_in_threadpool(svc.admin_set_resource, tail, await request.body())
        return Response(status_code=200)

    @app.delete("/kbs/v0/resource/{path:path}", tags=["admin"])
    async def delete_resource(request: Request, path: str) -> Response:
        await admin(request)
        await run_in_threadpool(svc.admin_delete_resource, _resource_tail(request, path))
        return Response(status_code=200)

    for kind in ("resource", "attestation"):
        setter = (svc.admin_set_resource_policy if kind == "resource"
                  else svc.admin_set_attestation_policy)

        def _routes(kind: str, setter: Callable[[bytes], None]) -> None:
            @app.post(f"/kbs/v0/{kind}-policy", openapi_extra=_body_doc(_B64_POLICY),
                      tags=["admin"], name=f"set_{kind}_policy")
            async def set_policy(request: Request) -> Response:
                await admin(request)
                await run_in_threadpool(setter, await request.body())
                return Response(status_code=200)

            @app.get(f"/kbs/v0/{kind}-policy", tags=["admin"], name=f"get_{kind}_policy")
            async def get_policy(request: Request) -> Response:
                await admin(request)
                return JSONResponse(await run_in_threadpool(svc.admin_get_policy, kind))

        _routes(kind, setter)

    @app.post("/kbs/v0/reference-values", openapi_extra=_REF_DOC, tags=["admin"])
    async def set_reference_value(request: Request) -> Response:
        await admin(request)
        await run_in_threadpool(svc.admin_set_reference_value, await request.body())
        return Response(status_code=200)

    @app.get("/kbs/v0/reference-values", tags=["admin"])
    async def get_reference_values(request: Request) -> Response:
        await admin(request)
        return JSONResponse(await run_in_threadpool(svc.store.reference_values))

    # Trustee's RVPS calls (kbs/src/api_server.rs "reference-value").
    @app.post("/kbs/v0/reference-value", tags=["admin"])
    async def register_reference_value(request: Request) -> Response:
        await admin(request)
        await run_in_threadpool(svc.admin_register_reference_value, await request.body())
        return Response(status_code=200)

    @app.get("/kbs/v0/reference-value/{name}", tags=["admin"])
    async def get_reference_value(request: Request, name: str) -> Response:
        await admin(request)
        return JSONResponse(await run_in_threadpool(svc.admin_get_reference_value, name))

    @app.delete("/kbs/v0/reference-values/{name}", tags=["admin"])
    async def delete_reference_value(request: Request, name: str) -> Response:
        await admin(request)
        await run_in_threadpool(svc.admin_delete_reference_value, name)
        return Response(status_code=200)

    # -- operations --------------------------------------------------------------------------
    @app.get(JWKS_PATH, tags=["operations"])
    async def jwks() -> Response:
        return JSONResponse({"keys": [svc.signer.jwk]})

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> Response:
        await run_in_threadpool(svc.store.get_policy, "resource")
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", tags=["operations"])
    async def metrics() -> Response:
        return PlainTextResponse(svc.metrics.render(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    app.add_middleware(BodyLimit)  # type: ignore[arg-type]
    return app
