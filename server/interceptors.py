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
import itertools
import secrets
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from server import authz, context
from server.authz import ANONYMOUS, Machine, Principal, Resident
from server.crypto.machine import identity_from_pem
from server.errors import DomainError, PermissionDenied, Unauthenticated

log = logging.getLogger("onestop.rpc")

TokenResolver = Callable[[str], Awaitable[Resident]]
MAX_REQUEST_ID = 128


_PROCESS_TAG = f"req_{secrets.token_hex(4)}_"
_sequence = itertools.count(1)


def next_request_id() -> str:
    """Unique across processes (a random per-process tag) and cheap (a counter)."""
    return f"{_PROCESS_TAG}{next(_sequence):x}"


class _CallState:
    """One call's state between the pipeline's pieces (a plain class: made on every call)."""

    __slots__ = ("call", "token", "authorization", "started", "code")

    def __init__(self, call: context.CallContext, token: Any, authorization: str, started: float) -> None:
        self.call = call
        self.token = token
        self.authorization = authorization
        self.started = started
        self.code = "OK"


class MethodTable(grpc.GenericRpcHandler):
    """Every wrapped method of every area in one dictionary: one lookup per call, whatever the number
    of services."""

    def __init__(self) -> None:
        self.methods: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self.methods.get(handler_call_details.method)


class WrappingRegistrar:
    """Stands in for the server while the areas register their servicers, and puts the pipeline
    around every method handler once, there. The same pieces as a grpc.aio interceptor, without
    the interceptor's extra dispatch on every call (measured: it is a large share of a cheap RPC).

    Every method goes into one generic `MethodTable`, never into the server's registered methods:
    grpc.aio's server keeps one pending request per registered method and waits on all of them
    (`asyncio.wait` over every future) each time a call arrives, so ~90 registered methods cost
    every call ~150 µs of server CPU (bench/core.py measures it). A generated servicer registers
    its methods both ways, so dropping the registered copy loses no method."""

    def __init__(self, server: aio.Server, pipeline: "Pipeline") -> None:
        self._server = server
        self._pipeline = pipeline
        self._table: MethodTable | None = None

    @property
    def methods(self) -> dict[str, grpc.RpcMethodHandler]:
        """Full method name -> wrapped handler, for everything registered so far."""
        return self._table.methods if self._table is not None else {}

    def _add(self, method: str, handler: grpc.RpcMethodHandler) -> None:
        if self._table is None:
            self._table = MethodTable()
            self._server.add_generic_rpc_handlers((self._table,))
        if method not in self._table.methods:
            # Health and reflection answer any caller, untouched (as through Pipeline.intercept_service).
            self._table.methods[method] = handler if method.startswith("/grpc.") else self._pipeline.wrap(method, handler)

    def add_generic_rpc_handlers(self, handlers) -> None:
        for handler in handlers:
            methods = getattr(handler, "_method_handlers", None)
            if methods is None:  # only the generated dictionary handlers are expected here
                raise TypeError(f"cannot wrap {type(handler).__name__}")
            for name, method_handler in methods.items():
                self._add(name, method_handler)

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        for name, method_handler in handlers.items():
            self._add(f"/{service}/{name}", method_handler)


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

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """`handler` with the pipeline around it (done once per method, at registration)."""
        return self._wrap(method, handler)

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        # Plain try/except/finally rather than an async context manager: this runs on every call.
        open_, admit, settle, close = self._open, self._admit, self._settle, self._close

        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def unary_response(request: Any, ctx: aio.ServicerContext) -> Any:
                state = open_(method, ctx)
                try:
                    await admit(state, ctx)
                    return await inner(request, ctx)
                except BaseException as error:
                    await settle(state, ctx, error)
                finally:
                    close(state)

            behaviour: Callable[..., Any] = unary_response
        else:
            inner = handler.unary_stream or handler.stream_stream

            async def stream_response(request: Any, ctx: aio.ServicerContext) -> Any:
                state = open_(method, ctx)
                try:
                    await admit(state, ctx)
                    result = inner(request, ctx)
                    if inspect.isasyncgen(result):
                        async for item in result:
                            yield item
                    else:
                        await result
                except BaseException as error:
                    await settle(state, ctx, error)
                finally:
                    close(state)

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

    def _open(self, method: str, ctx: aio.ServicerContext) -> "_CallState":
        """1. request id (and the call context every handler reads)."""
        request_id = authorization = ""
        for key, value in ctx.invocation_metadata() or ():  # the last of repeated keys counts
            if key == "x-request-id":
                request_id = value if isinstance(value, str) else ""
            elif key == "authorization":
                authorization = value if isinstance(value, str) else ""
        if not request_id or len(request_id) > MAX_REQUEST_ID or not request_id.isprintable():
            request_id = next_request_id()
        call = context.CallContext(method, request_id)
        ctx.set_trailing_metadata((("x-request-id", request_id),))
        return _CallState(call, context.enter(call), authorization, time.perf_counter())

    async def _admit(self, state: "_CallState", ctx: aio.ServicerContext) -> None:
        """4-5. authentication, then the method's rule."""
        call = state.call
        call.principal, call.via_gateway = await self._authenticate(state.authorization, ctx)
        rule = authz.rule_for(call.method)
        if rule is None:
            raise PermissionDenied("NO_RULE", "this method has no authorisation rule")
        rule.check(call.principal)

    async def _settle(self, state: "_CallState", ctx: aio.ServicerContext, error: BaseException) -> None:
        """3. error mapping: always raises (an abort, or the error itself)."""
        call = state.call
        if isinstance(error, DomainError):
            state.code = error.code.name
            log.info("refused", extra={"method": call.method, "reason": error.reason, "code": state.code})
            await ctx.abort(
                error.code,
                error.message,
                trailing_metadata=(
                    ("grpc-status-details-bin", error.to_status().SerializeToString()),
                    ("x-request-id", call.request_id),
                ),
            )
        if isinstance(error, aio.AbortError):
            state.code = "ABORTED_BY_HANDLER"
            raise error
        if isinstance(error, (asyncio.CancelledError, GeneratorExit)) or not isinstance(error, Exception):
            state.code = "CANCELLED"  # the client went away or the deadline passed
            raise error
        state.code = "INTERNAL"
        log.error("unhandled error", exc_info=error, extra={"method": call.method})
        await ctx.abort(
            grpc.StatusCode.INTERNAL,
            f"internal error; quote request id {call.request_id}",
            trailing_metadata=(("x-request-id", call.request_id),),
        )

    def _close(self, state: "_CallState") -> None:
        """2. one access line per call (ids and codes only)."""
        if log.isEnabledFor(logging.INFO):
            principal = state.call.principal
            log.info("rpc", extra={
                "method": state.call.method,
                "code": state.code,
                "ms": round((time.perf_counter() - state.started) * 1000, 2),
                "caller": principal.kind,
                "role": getattr(principal, "role", None),
            })
        context.leave(state.token)

    async def _authenticate(self, bearer: str, ctx: aio.ServicerContext) -> tuple[Principal, bool]:
        machine: Machine | None = None
        pem = (ctx.auth_context() or {}).get("x509_pem_cert")
        if pem:
            identity = identity_from_pem(pem[0])
            if identity is None:
                raise Unauthenticated("UNKNOWN_CLIENT_CERTIFICATE", "the client certificate names no principal")
            machine = Machine(identity.role, identity.id, dict(identity.attributes))
        if bearer:
            scheme, _, token = bearer.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated("MALFORMED_AUTHORIZATION", "authorization must be 'Bearer <token>'")
            resident = await self._resolve_token(token.strip())
            return resident, machine is not None and machine.role == "gateway"
        if machine is not None:
            return machine, False
        return ANONYMOUS, False
