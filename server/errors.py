"""Domain errors: the one place where a refusal gets its gRPC code, reason and field violations.

Rules raise these; the error-mapping interceptor turns them into a `google.rpc.Status` with exactly
one `ErrorInfo` (an UPPER_SNAKE reason in the `onestop.jp` domain) and, where a field is at fault,
a `BadRequest` listing the fields. Anything else that escapes a handler is a bug and becomes
INTERNAL without details.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

DOMAIN = "onestop.jp"


@dataclass(frozen=True)
class FieldViolation:
    """One field at fault: `field` is the proto field path (e.g. `form.children[0].birth_date`)."""

    field: str
    description: str


@dataclass
class DomainError(Exception):
    """A refusal the caller can act on. Subclasses fix the gRPC code."""

    reason: str
    message: str
    violations: list[FieldViolation] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def to_status(self) -> status_pb2.Status:
        """The `google.rpc.Status` sent in the `grpc-status-details-bin` trailer."""
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        info = any_pb2.Any()
        info.Pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata))
        status.details.append(info)
        if self.violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in self.violations
                ]
            )
            detail = any_pb2.Any()
            detail.Pack(bad)
            status.details.append(detail)
        return status


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    @classmethod
    def field(cls, name: str, description: str, reason: str = "INVALID_FIELD") -> "InvalidArgument":
        """The common case: one field is wrong."""
        return cls(reason, f"{name}: {description}", [FieldViolation(name, description)])

    @classmethod
    def fields(cls, violations: list[FieldViolation], reason: str = "INVALID_FIELD") -> "InvalidArgument":
        names = ", ".join(v.field for v in violations)
        return cls(reason, f"invalid fields: {names}", list(violations))


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Conflict(DomainError):
    """Optimistic-concurrency loss or a concurrent change: the caller re-reads and retries."""

    code = grpc.StatusCode.ABORTED


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(DomainError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


_BY_CODE = {cls.code: cls for cls in DomainError.__subclasses__()}


def from_status(status: status_pb2.Status) -> DomainError:
    """Rebuild a DomainError from a `google.rpc.Status` (used when a stored failure is replayed)."""
    reason, metadata, violations = "UNKNOWN_REASON", {}, []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Unpack(bad):
            violations = [FieldViolation(v.field, v.description) for v in bad.field_violations]
    code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)
    cls = _BY_CODE.get(code, FailedPrecondition)
    return cls(reason, status.message, violations, metadata)


def status_code_name(code: int) -> str:
    return code_pb2.Code.Name(code)
