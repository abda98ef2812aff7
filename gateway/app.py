"""The smartphone gateway: JSON and multipart over HTTP -> the one gRPC server.

    app = create_app(settings)                      # server at settings.grpc_host:grpc_port
    app = create_app(settings, grpc_target="127.0.0.1:50052")   # the server's mTLS listener

Routes come from `gateway.routes.<resource>.operations()`; `/openapi.json` documents the same list.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from gateway import openapi
from gateway.api import Operation, json_response, routes
from gateway.backend import Backend, open_channel
from gateway.errors import error_handlers
from gateway.middleware import BodyLimitMiddleware, RequestIdMiddleware, Stats
from server.config import Settings

RESOURCES = ("auth", "procedures", "applications", "notices", "certificates")
JSON_BODY_LIMIT = 1024 * 1024
# Room for the multipart boundaries, part headers and small form fields around the file.
MULTIPART_OVERHEAD = 64 * 1024


def operations() -> list[Operation]:
    """Every operation of every resource module whose protos are generated, plus the document."""
    ops: list[Operation] = []
    for name in RESOURCES:
        module = importlib.import_module(f"gateway.routes.{name}")
        ops += module.operations()
    ops.append(Operation("GET", "/openapi.json", _openapi, "This document (OpenAPI 3.1)", "openApi", "meta",
                         body="none", public=True, errors=(500,)))
    return ops


async def _openapi(request: Request) -> Response:
    return json_response(request.app.state.openapi)


def _limit_for(ops: list[Operation], settings: Settings) -> Callable[[str], int]:
    upload = [re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", op.path) + "$") for op in ops if op.body == "multipart"]
    upload_limit = settings.attachment_max_bytes + MULTIPART_OVERHEAD

    def limit_for(path: str) -> int:
        return upload_limit if any(p.match(path) for p in upload) else JSON_BODY_LIMIT

    return limit_for


def create_app(settings: Settings, *, grpc_target: str | None = None) -> Starlette:
    # The gateway is a machine principal: it talks to the listener that requires client certificates.
    target = grpc_target or f"{settings.grpc_host}:{settings.grpc_mtls_port or settings.grpc_port + 1}"
    ops = operations()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        channel = open_channel(settings, target)  # inside the running loop
        app.state.backend = Backend(channel)
        try:
            yield
        finally:
            await channel.close()

    stats = Stats()
    app = Starlette(
        routes=routes(ops),
        middleware=[
            Middleware(RequestIdMiddleware, stats=stats),
            Middleware(BodyLimitMiddleware, limit_for=_limit_for(ops, settings)),
        ],
        exception_handlers=error_handlers(),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.operations = ops
    app.state.stats = stats
    app.state.openapi = openapi.document(ops)
    return app
