"""Public verification of a printed certificate by its verification code (no sign-in, no personal data)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.api import Operation, query_message, unary
from gateway.backend import backend

try:
    from onestop.issuance.v1 import issuance_pb2 as pb
    from onestop.issuance.v1 import issuance_pb2_grpc as pb_grpc
except ImportError:  # the issuance area's stubs are not generated yet
    pb = pb_grpc = None


async def verify(request: Request) -> Response:
    message = query_message(request, pb.VerifyCertificateRequest)
    stub = backend(request).stub(pb_grpc.IssuanceServiceStub)
    # Public: whatever token a phone sends, the answer is the same, so none is passed on.
    return await unary(request, stub.VerifyCertificate, message, anonymous=True)


def operations() -> list[Operation]:
    if pb is None:
        return []
    return [
        Operation("GET", "/v1/certificates/{verification_code}", verify,
                  "Is a printed certificate genuine? GENUINE (type, municipality, issue time), VOIDED or UNKNOWN",
                  "verifyCertificate", "certificates", pb.VerifyCertificateRequest, pb.VerifyCertificateResponse,
                  body="none", public=True, errors=(400, 500, 503, 504)),
    ]
