"""The ordered pieces every RPC passes through, in one interceptor so the order is visible:

1. request id   — taken from `x-request-id` metadata or made; echoed in trailers and logs;
2. logging      — one JSON access line per call (method, code, duration, caller kind; no content);
3. error mapping — DomainError -> status + `google.rpc` details; anything else -> INTERNAL;
4. authentication — mTLS client certificate -> Machine; `authorization: Bearer` -> Resident;
5. authorisation — the method's rule from `server.authz.RULES` (no rule: refused).

Health and reflection (`/grpc.*`) answer any caller and pass through untouched.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
from grpc import aio

from server import authz, context
from server.authz import Anonymous, Machine, Principal, Resident
from server.crypto.machine import identity_from_pem
from server.errors import DomainError, PermissionDenied, Unauthenticated
from server.ids import new_id

log = logging.getLogger("onestop.rpc")

TokenResolver = Callable[[str], Awaitable[Resident]]
MAX_REQUEST_ID = 128


class Pipeline(aio.ServerInterceptor):
    def __init__(self, resolve_token: TokenResolver) -> None:
        self._resolve_token = resolve_token
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith("/grpc."):
            return handler
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            wrapped = self._wrapped[method] = self._wrap(method, handler)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        scope = self._scope

        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def unary_response(request: Any, ctx: aio.ServicerContext) -> Any:
                async with scope(method, ctx):
                    return await inner(request, ctx)

            behaviour: Callable[..., Any] = unary_response
        else:
            inner = handler.unary_stream or handler.stream_stream

            async def stream_response(request: Any, ctx: aio.ServicerContext) -> Any:
                async with scope(method, ctx):
                    result = inner(request, ctx)
                    if inspect.isasyncgen(result):
                        async for item in result:
                            yield item
                    else:
                        await result

            behaviour = stream_response

        factory = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(handler.request_streaming, handler.response_streaming)]
        return factory(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    @asynccontextmanager
    async def _scope(self, method: str, ctx: aio.ServicerContext):
        started = time.perf_counter()
        metadata = {k: v for k, v in (ctx.invocation_metadata() or ()) if isinstance(v, str)}
        request_id = metadata.get("x-request-id", "")
        if not request_id or len(request_id) > MAX_REQUEST_ID or not request_id.isprintable():
            request_id = new_id("req")
        call = context.CallContext(method=method, request_id=request_id)
        token = context.enter(call)
        code = "OK"
        try:
            ctx.set_trailing_metadata((("x-request-id", request_id),))
            call.principal, call.via_gateway = await self._authenticate(metadata, ctx)
            rule = authz.rule_for(method)
            if rule is None:
                raise PermissionDenied("NO_RULE", "this method has no authorisation rule")
            rule.check(call.principal)
            yield call
        except DomainError as error:
            code = error.code.name
            log.info("refused", extra={"method": method, "reason": error.reason, "code": code})
            await ctx.abort(
                error.code,
                error.message,
                trailing_metadata=(
                    ("grpc-status-details-bin", error.to_status().SerializeToString()),
                    ("x-request-id", request_id),
                ),
            )
        except aio.AbortError:
            code = "ABORTED_BY_HANDLER"
            raise
        except (asyncio.CancelledError, GeneratorExit):
            code = "CANCELLED"  # the client went away or the deadline passed
            raise
        except Exception:
            code = "INTERNAL"
            log.exception("unhandled error", extra={"method": method})
            await ctx.abort(
                grpc.StatusCode.INTERNAL,
                f"internal error; quote request id {request_id}",
                trailing_metadata=(("x-request-id", request_id),),
            )
        finally:
            log.info(
                "rpc",
                extra={
                    "method": method,
                    "code": code,
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                    "caller": call.principal.kind,
                    "role": getattr(call.principal, "role", None),
                },
            )
            context.leave(token)

    async def _authenticate(self, metadata: dict[str, str], ctx: aio.ServicerContext) -> tuple[Principal, bool]:
        machine: Machine | None = None
        pem = (ctx.auth_context() or {}).get("x509_pem_cert")
        if pem:
            identity = identity_from_pem(pem[0])
            if identity is None:
                raise Unauthenticated("UNKNOWN_CLIENT_CERTIFICATE", "the client certificate names no principal")
            machine = Machine(identity.role, identity.id, dict(identity.attributes))
        bearer = metadata.get("authorization", "")
        if bearer:
            scheme, _, token = bearer.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated("MALFORMED_AUTHORIZATION", "authorization must be 'Bearer <token>'")
            resident = await self._resolve_token(token.strip())
            return resident, machine is not None and machine.role == "gateway"
        if machine is not None:
            return machine, False
        return Anonymous(), False
