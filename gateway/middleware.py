"""Pure ASGI middleware (no BaseHTTPMiddleware: it breaks streaming bodies and context variables).

Order, outermost first: RequestIdMiddleware (take or make the id, echo it, one access log line),
BodyLimitMiddleware (refuse a declared Content-Length over the route's limit before reading a byte;
stop a body that grows past it).
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import payload_too_large, status_response
from server.ids import new_id

log = logging.getLogger("onestop.gateway")

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("gateway_request_id", default="")
MAX_REQUEST_ID = 128


def current_request_id() -> str:
    return _request_id.get()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


@dataclass
class Stats:
    """What the gateway is doing now (read by tests, graceful shutdown and operators)."""

    in_flight: int = 0
    served: int = 0


class RequestIdMiddleware:
    """`X-Request-Id` from the phone (or a new one) -> scope state, context var, response header."""

    def __init__(self, app: ASGIApp, stats: Stats | None = None) -> None:
        self.app = app
        self.stats = stats or Stats()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id") or ""
        request_id = given if 0 < len(given) <= MAX_REQUEST_ID and given.isprintable() else new_id("req")
        scope.setdefault("state", {})["request_id"] = request_id
        token = _request_id.set(request_id)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        self.stats.in_flight += 1
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.stats.in_flight -= 1
            self.stats.served += 1
            # Ids and codes only: never bodies, tokens or query strings (a keyword may be a name).
            log.info("http", extra={"request_id": request_id, "method": scope["method"],
                                    "route": scope.get("route_name") or _route_path(scope),
                                    "status": status, "ms": round((time.perf_counter() - started) * 1000, 2)})
            _request_id.reset(token)


def _route_path(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", "") or "-"


class BodyLimitMiddleware:
    """Refuse bodies over `limit_for(path)`: by Content-Length at once, or when the stream grows past it.

    A body that grows past the limit makes `receive()` raise GatewayError(413) inside the route,
    so a route forwarding the body into a gRPC stream cancels that call and nothing is stored.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                declared_bytes = int(declared)
            except ValueError:
                declared_bytes = -1
            if declared_bytes > limit:
                response = status_response(payload_too_large(limit).to_status(), 413)
                response.headers["connection"] = "close"
                await response(scope, receive, send)
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise payload_too_large(limit)
            return message

        await self.app(scope, limited_receive, send)

