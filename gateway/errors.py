"""The one place where a refusal becomes an HTTP response.

gRPC status codes map to HTTP exactly as grpc-gateway maps them; the body is the `google.rpc.Status`
of the call as JSON (`code`, `message`, `details` with the ErrorInfo reason and BadRequest
`fieldViolations`). Two reasons override the code's mapping: an over-size body is 413 and a content
type the server refuses is 415. The gateway's own refusals (bad JSON, a missing form part, a body
over the limit) use the same JSON shape, so a phone parses one kind of error.
"""

from __future__ import annotations

import logging

import grpc
import orjson
from google.protobuf import any_pb2, json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger("onestop.gateway")

DOMAIN = "onestop.jp"

# grpc-gateway's runtime.HTTPStatusFromCode, code for code.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

# ErrorInfo reasons whose HTTP status is more precise than their gRPC code's.
TOO_LARGE_REASONS = frozenset({
    "PAYLOAD_TOO_LARGE", "ATTACHMENT_TOO_LARGE", "FILE_TOO_LARGE", "APPLICATION_TOO_LARGE",
    "TOTAL_SIZE_EXCEEDED", "ATTACHMENTS_TOO_LARGE", "SIZE_LIMIT_EXCEEDED", "TOO_LARGE",
})
UNSUPPORTED_TYPE_REASONS = frozenset({
    "CONTENT_TYPE_MISMATCH", "UNSUPPORTED_CONTENT_TYPE", "UNSUPPORTED_MEDIA_TYPE", "UNSUPPORTED_TYPE",
})


def http_status_for(code: grpc.StatusCode, reason: str = "") -> int:
    if reason in TOO_LARGE_REASONS or reason.endswith("_TOO_LARGE"):
        return 413
    if reason in UNSUPPORTED_TYPE_REASONS:
        return 415
    return HTTP_STATUS.get(code, 500)


def _code_by_number(number: int) -> grpc.StatusCode:
    return next((c for c in grpc.StatusCode if c.value[0] == number), grpc.StatusCode.UNKNOWN)


class GatewayError(Exception):
    """A refusal made by the gateway itself, rendered as a google.rpc.Status JSON body."""

    def __init__(self, http_status: int, reason: str, message: str, *,
                 code: int = code_pb2.INVALID_ARGUMENT, violations: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.reason = reason
        self.message = message
        self.code = code
        self.violations = violations or []

    @classmethod
    def field(cls, name: str, description: str, *, http_status: int = 422,
              reason: str = "INVALID_FIELD") -> "GatewayError":
        return cls(http_status, reason, f"{name}: {description}", violations=[(name, description)])

    def to_status(self) -> status_pb2.Status:
        status = status_pb2.Status(code=self.code, message=self.message)
        info = any_pb2.Any()
        info.Pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN))
        status.details.append(info)
        if self.violations:
            bad = any_pb2.Any()
            bad.Pack(error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in self.violations
            ]))
            status.details.append(bad)
        return status


def payload_too_large(limit: int) -> GatewayError:
    return GatewayError(413, "PAYLOAD_TOO_LARGE", f"the request body is over the limit of {limit} bytes",
                        code=code_pb2.RESOURCE_EXHAUSTED)


def unsupported_media_type(message: str) -> GatewayError:
    return GatewayError(415, "UNSUPPORTED_MEDIA_TYPE", message, code=code_pb2.INVALID_ARGUMENT)


def status_of(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The call's google.rpc.Status from its trailers, or one built from code and details."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # trailer and code disagree: trust the code
        status = None
    if status is None:
        status = status_pb2.Status(code=error.code().value[0], message=error.details() or "")
    return status


def reason_of(status: status_pb2.Status) -> str:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


def status_response(status: status_pb2.Status, http_status: int, request_id: str | None = None) -> Response:
    body = json_format.MessageToDict(status)
    body.setdefault("code", status.code)
    body.setdefault("message", status.message)
    body.setdefault("details", [])
    headers = {"x-request-id": request_id} if request_id else None
    return Response(orjson.dumps(body), status_code=http_status, media_type="application/json", headers=headers)


def rpc_error_response(error: grpc.aio.AioRpcError) -> Response:
    status = status_of(error)
    code = _code_by_number(status.code)
    reason = reason_of(status)
    if code == grpc.StatusCode.INTERNAL or code == grpc.StatusCode.UNKNOWN:
        log.warning("server error", extra={"grpc_code": code.name})
    return status_response(status, http_status_for(code, reason))


async def handle_gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return status_response(exc.to_status(), exc.http_status)


async def handle_rpc_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, grpc.aio.AioRpcError)
    return rpc_error_response(exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 in the same JSON shape."""
    from starlette.exceptions import HTTPException

    assert isinstance(exc, HTTPException)
    code = {404: code_pb2.NOT_FOUND, 405: code_pb2.UNIMPLEMENTED}.get(exc.status_code, code_pb2.INVALID_ARGUMENT)
    reason = {404: "ROUTE_NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "BAD_REQUEST")
    error = GatewayError(exc.status_code, reason, str(exc.detail), code=code)
    response = status_response(error.to_status(), exc.status_code)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("gateway error", extra={"path_template": _template(request)})
    error = GatewayError(500, "INTERNAL", "internal error in the gateway", code=code_pb2.INTERNAL)
    return status_response(error.to_status(), 500)


async def handle_client_disconnect(request: Request, exc: Exception) -> Response:
    """The phone went away mid-request: nothing to answer, nothing to log as an error."""
    log.info("client disconnected", extra={"path_template": _template(request)})
    return Response(status_code=499)


def _template(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", "-")


def error_handlers() -> dict:
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

    return {
        GatewayError: handle_gateway_error,
        ClientDisconnect: handle_client_disconnect,
        grpc.aio.AioRpcError: handle_rpc_error,
        HTTPException: handle_http_exception,
        Exception: handle_unexpected,
    }
