"""Assertions shared by tests: the gRPC code, the ErrorInfo reason, the fields named."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def error_details(error: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    """(ErrorInfo reason, BadRequest field paths) from a failed call."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no google.rpc.Status details on {error.code()}: {error.details()}"
    reason, fields = "", []
    for detail in status.details:
        info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
        if detail.Unpack(info):
            assert info.domain == "onestop.jp"
            reason = info.reason
        elif detail.Unpack(bad):
            fields = [v.field for v in bad.field_violations]
    return reason, fields


async def expect_error(call, code: grpc.StatusCode, reason: str | None = None, field: str | None = None):
    """Await `call`, assert it fails with `code` (and `reason`, and `field` among the violations)."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        assert error.code() == code, f"expected {code}, got {error.code()}: {error.details()}"
        got_reason, fields = error_details(error)
        if reason is not None:
            assert got_reason == reason, f"expected reason {reason}, got {got_reason}: {error.details()}"
        if field is not None:
            assert field in fields, f"expected field {field} in {fields}"
        return error
    raise AssertionError(f"expected {code} {reason or ''}, but the call succeeded")
