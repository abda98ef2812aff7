"""How a route module declares an operation, and the helpers that translate JSON <-> protobuf.

Each route module lists `Operation`s; the app builds its Starlette routes from them and the
OpenAPI document from the same list, so the two cannot drift apart. JSON follows the protobuf JSON
mapping (`google.protobuf.json_format`): lowerCamelCase names, bytes as base64, int64 as strings,
Timestamps as RFC 3339.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.backend import backend, metadata, request_id
from gateway.errors import GatewayError, status_response

log = logging.getLogger("onestop.gateway")

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass
class Operation:
    """One HTTP operation over one RPC (or none: the OpenAPI document itself)."""

    method: str
    path: str
    endpoint: Endpoint
    summary: str
    operation_id: str
    tag: str
    request: type[Message] | None = None        # JSON body (POST/PATCH) or query parameters (GET)
    response: type[Message] | None = None       # JSON response body
    body: str = "json"                          # "json", "multipart", "none"
    public: bool = False                        # no bearer token needed
    produces: str = "application/json"          # or "text/event-stream"
    errors: tuple[int, ...] = (400, 401, 403, 404, 422, 500, 503, 504)
    multipart_fields: dict[str, str] = field(default_factory=dict)  # form part -> description

    @property
    def path_params(self) -> list[str]:
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{") and part.endswith("}")]


def routes(operations: list[Operation]) -> list[Route]:
    """One Starlette route per path, dispatching on the method, so a 405 lists every allowed method."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    names: dict[str, list[str]] = {}
    for op in operations:
        by_path.setdefault(op.path, {})[op.method] = _guarded(op)
        names.setdefault(op.path, []).append(op.operation_id)
    result = []
    for path, handlers in by_path.items():
        if "GET" in handlers:
            handlers.setdefault("HEAD", handlers["GET"])

        async def dispatch(request: Request, handlers: dict[str, Endpoint] = handlers) -> Response:
            return await handlers[request.method](request)

        result.append(Route(path, dispatch, methods=list(handlers), name="|".join(names[path])))
    return result


_EXPECTED = (GatewayError, grpc.aio.AioRpcError, HTTPException, ClientDisconnect)


def _guarded(op: Operation) -> Endpoint:
    """The operation's endpoint, refusing phones that are not signed in (resident routes), and
    turning a bug into a 500 with the Status body, logged by type and place only: an exception's
    message may quote request content, so it never reaches a log."""
    endpoint = op.endpoint

    async def guarded(request: Request) -> Response:
        if not op.public and not request.headers.get("authorization"):
            # Without a token the server would see the gateway's own certificate and answer 403;
            # the phone's real problem is that it is not signed in.
            raise GatewayError(401, "AUTHENTICATION_REQUIRED", "sign in first: Authorization: Bearer <token>",
                               code=16)
        try:
            return await endpoint(request)
        except _EXPECTED:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: answered, logged without its message
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            log.error("gateway bug", extra={"request_id": request_id(request), "operation": op.operation_id,
                                            "error": type(exc).__name__, "at": f"{frame.filename}:{frame.lineno}"})
            error = GatewayError(500, "INTERNAL", f"internal error in the gateway; quote {request_id(request)}",
                                 code=13)
            return status_response(error.to_status(), 500)

    guarded.__name__ = endpoint.__name__
    guarded.__doc__ = endpoint.__doc__
    return guarded


def to_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def json_response(message: Message | dict, status_code: int = 200) -> Response:
    body = message if isinstance(message, dict) else to_json(message)
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


def _fill_request_id(request: Request, message: Message) -> None:
    """Mutating RPCs need `request_id`: the body's, else `Idempotency-Key`, else the X-Request-Id."""
    if "request_id" in message.DESCRIPTOR.fields_by_name and not getattr(message, "request_id"):
        message.request_id = request.headers.get("idempotency-key") or request_id(request)


def _set_path_params(request: Request, message: Message) -> None:
    for name, value in request.path_params.items():
        descriptor = message.DESCRIPTOR.fields_by_name.get(name)
        if descriptor is None:
            continue
        existing = getattr(message, name)
        if existing and existing != value:
            raise GatewayError.field(name, "differs from the path", http_status=400)
        setattr(message, name, value)


async def json_message(request: Request, message_type: type[Message]) -> Message:
    """The request body as `message_type`: 400 for JSON that does not parse, 422 for a wrong shape."""
    raw = await request.body()
    data: Any = {}
    if raw.strip():
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if content_type not in ("application/json", "") and not content_type.endswith("+json"):
            raise GatewayError(415, "UNSUPPORTED_MEDIA_TYPE", "the body must be application/json")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise GatewayError(400, "MALFORMED_JSON", f"the body is not JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise GatewayError(400, "MALFORMED_JSON", "the body must be a JSON object")
    message = message_type()
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        raise GatewayError(422, "INVALID_JSON_FIELD", str(exc),
                           violations=[(_field_in(str(exc), data), str(exc))]) from None
    _set_path_params(request, message)
    _fill_request_id(request, message)
    return message


def _field_in(error: str, data: dict) -> str:
    """Best effort: the JSON field a ParseError names (json_format puts it in the message)."""
    for key in data:
        if f'"{key}"' in error or f" {key}" in error or f"{key}." in error:
            return key
    return "body"


_SCALAR = {
    FieldDescriptor.TYPE_BOOL: lambda v: v.lower() in ("1", "true", "yes"),
    FieldDescriptor.TYPE_INT32: int, FieldDescriptor.TYPE_SINT32: int, FieldDescriptor.TYPE_UINT32: int,
    FieldDescriptor.TYPE_INT64: int, FieldDescriptor.TYPE_SINT64: int, FieldDescriptor.TYPE_UINT64: int,
    FieldDescriptor.TYPE_FIXED32: int, FieldDescriptor.TYPE_FIXED64: int,
    FieldDescriptor.TYPE_DOUBLE: float, FieldDescriptor.TYPE_FLOAT: float,
    FieldDescriptor.TYPE_STRING: str,
}


def query_fields(message_type: type[Message]) -> list[FieldDescriptor]:
    """The fields a GET takes as query parameters: scalars and enums (repeated allowed)."""
    return [f for f in message_type.DESCRIPTOR.fields
            if f.type in _SCALAR or f.type == FieldDescriptor.TYPE_ENUM]


def query_message(request: Request, message_type: type[Message]) -> Message:
    """Query parameters (by JSON or proto name) and path parameters as `message_type`."""
    message = message_type()
    by_name = {}
    for f in query_fields(message_type):
        by_name[f.name] = by_name[f.json_name] = f
    for key in set(request.query_params.keys()):
        descriptor = by_name.get(key)
        if descriptor is None:
            raise GatewayError.field(key, "unknown query parameter", http_status=400)
        values = request.query_params.getlist(key)
        try:
            parsed = [_parse_scalar(descriptor, v) for v in values]
        except ValueError:
            raise GatewayError.field(descriptor.json_name, f"not a valid {_kind(descriptor)}", http_status=400) \
                from None
        try:
            if descriptor.is_repeated:
                getattr(message, descriptor.name).extend(parsed)
            else:
                setattr(message, descriptor.name, parsed[-1])
        except (ValueError, TypeError):  # e.g. out of the field's integer range
            raise GatewayError.field(descriptor.json_name, "out of range", http_status=400) from None
    _set_path_params(request, message)
    return message


def _kind(descriptor: FieldDescriptor) -> str:
    return "enum value" if descriptor.type == FieldDescriptor.TYPE_ENUM else "number"


def _parse_scalar(descriptor: FieldDescriptor, value: str) -> Any:
    if descriptor.type == FieldDescriptor.TYPE_ENUM:
        enum = descriptor.enum_type
        if value in enum.values_by_name:
            return enum.values_by_name[value].number
        if value.lstrip("-").isdigit() and int(value) in enum.values_by_number:
            return int(value)
        raise ValueError(value)
    return _SCALAR[descriptor.type](value)


async def call(request: Request, method: Callable[..., Any], message: Message, *, anonymous: bool = False
               ) -> Message:
    """Call a unary RPC with the phone's token and the request id; gRPC errors propagate (-> HTTP)."""
    pairs = metadata(request)
    if anonymous:
        pairs = tuple(p for p in pairs if p[0] != "authorization")
    return await method(message, metadata=pairs, timeout=backend(request).timeout_s)


async def unary(request: Request, method: Callable[..., Any], message: Message, status_code: int = 200, *,
                anonymous: bool = False) -> Response:
    return json_response(await call(request, method, message, anonymous=anonymous), status_code)
