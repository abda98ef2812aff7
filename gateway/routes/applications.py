"""A resident's applications: drafts, attachments (multipart, streamed), signed submission, withdrawal."""

from __future__ import annotations

import asyncio

import grpc
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from gateway import multipart
from gateway.api import Operation, json_message, json_response, query_message, unary
from gateway.backend import CHUNK_BYTES, backend, metadata, request_id
from gateway.errors import GatewayError

try:
    from onestop.application.v1 import application_pb2 as pb
    from onestop.application.v1 import application_pb2_grpc as pb_grpc
except ImportError:  # the application area's stubs are not generated yet
    pb = pb_grpc = None


def _stub(request: Request):
    return backend(request).stub(pb_grpc.ApplicationServiceStub)


class FileChunk:
    """The pieces of the next upload message as they arrived (views into the network chunks), joined
    once when the message is made."""

    __slots__ = ("pieces", "size")

    def __init__(self) -> None:
        self.pieces: list[bytes | memoryview] = []
        self.size = 0

    def add(self, piece: bytes | memoryview) -> None:
        self.pieces.append(piece)
        self.size += len(piece)

    def take(self):
        """The next upload message. The pieces (and the joined copy) are let go at once, not kept
        while the message is sent: per upload, memory holds one message and the chunk being read."""
        message = pb.UploadAttachmentRequest(chunk=b"".join(self.pieces))
        self.pieces, self.size = [], 0
        return message


async def create_draft(request: Request) -> Response:
    message = await json_message(request, pb.CreateDraftRequest)
    return await unary(request, _stub(request).CreateDraft, message, status_code=201)


async def update_draft(request: Request) -> Response:
    return await unary(request, _stub(request).UpdateDraft, await json_message(request, pb.UpdateDraftRequest))


async def get_application(request: Request) -> Response:
    message = query_message(request, pb.GetApplicationRequest)
    return await unary(request, _stub(request).GetApplication, message)


async def list_applications(request: Request) -> Response:
    message = query_message(request, pb.ListApplicationsRequest)
    return await unary(request, _stub(request).ListApplications, message)


async def prepare_submission(request: Request) -> Response:
    message = await json_message(request, pb.PrepareSubmissionRequest)
    return await unary(request, _stub(request).PrepareSubmission, message)


async def submit(request: Request) -> Response:
    message = await json_message(request, pb.SubmitApplicationRequest)
    return await unary(request, _stub(request).SubmitApplication, message)


async def withdraw(request: Request) -> Response:
    message = await json_message(request, pb.WithdrawApplicationRequest)
    return await unary(request, _stub(request).WithdrawApplication, message)


async def remove_attachment(request: Request) -> Response:
    message = await json_message(request, pb.RemoveAttachmentRequest)
    return await unary(request, _stub(request).RemoveAttachment, message)


async def list_evidence(request: Request) -> Response:
    message = query_message(request, pb.ListSubmissionEvidenceRequest)
    return await unary(request, _stub(request).ListSubmissionEvidence, message)


UPLOAD_FIELDS = {
    "slot": "the attachment slot (from the procedure's attachmentSlots)",
    "size": "the file's size in bytes (declared; the server checks it)",
    "request_id": "optional: the change's request id (else Idempotency-Key, else X-Request-Id)",
}


async def upload_attachment(request: Request) -> Response:
    """multipart/form-data: `slot`, `size`, then `file` (its part Content-Type is the declared type).

    The file is forwarded into UploadAttachment chunk by chunk as it arrives. If the body stops
    early, grows past the limit or the phone disconnects, the gRPC call is cancelled before its
    stream is closed, so the server stores nothing.
    """
    stream = multipart.events(request)
    fields: dict[str, str] = {}
    file_part: multipart.PartBegin | None = None
    async for event in stream:
        if isinstance(event, multipart.PartBegin):
            if event.filename is not None or event.name == "file":
                file_part = event
                break
            fields[event.name] = await multipart.read_field(stream, event.name)
    if file_part is None:
        raise GatewayError.field("file", "required: a file part after slot and size")
    violations = [(name, "required before the file part") for name in ("slot", "size") if not fields.get(name)]
    size = fields.get("size", "")
    if size and not size.isdigit():
        violations.append(("size", "a whole number of bytes"))
    if violations:
        raise GatewayError(422, "INVALID_FORM", "invalid form fields: " + ", ".join(f for f, _ in violations),
                           violations=violations)
    first = pb.UploadAttachmentRequest(metadata=pb.UploadAttachmentMetadata(
        request_id=fields.get("request_id") or request.headers.get("idempotency-key") or request_id(request),
        application_id=request.path_params["application_id"],
        slot=fields["slot"],
        declared_content_type=file_part.content_type,
        declared_size=int(size),
        filename=(file_part.filename or "")[:255],
    ))
    failure: list[BaseException] = []

    async def requests():
        try:
            yield first
            chunk = FileChunk()
            async for event in stream:
                if isinstance(event, multipart.PartData):
                    chunk.add(event.data)
                    del event  # the piece lives in `chunk` only, and goes with it
                    if chunk.size >= CHUNK_BYTES:
                        yield chunk.take()
                elif isinstance(event, multipart.PartEnd):
                    if chunk.size:
                        yield chunk.take()
                elif isinstance(event, multipart.PartBegin):
                    raise GatewayError.field(event.name or "file", "one file per request, and last")
            # The stream ended at the closing boundary: only now is the gRPC stream half-closed.
        except BaseException as exc:  # noqa: BLE001 - recorded, then the call is cancelled
            failure.append(exc)
            raise

    call = _stub(request).UploadAttachment(requests(), metadata=metadata(request), timeout=backend(request).upload_timeout_s)
    try:
        response = await call
    except (grpc.aio.AioRpcError, asyncio.CancelledError) as error:
        # A failing request iterator makes grpc cancel the call locally: awaiting it then raises
        # CancelledError (or CANCELLED). Report the iterator's own failure instead.
        ours = failure and (isinstance(error, asyncio.CancelledError) or error.code() == grpc.StatusCode.CANCELLED)
        task = asyncio.current_task()
        if ours and not (task is not None and task.cancelling()):
            if isinstance(failure[0], ClientDisconnect):
                return Response(status_code=499)
            raise failure[0] from None
        call.cancel()
        raise
    except BaseException:
        call.cancel()
        raise
    return json_response(response, 201)


def operations() -> list[Operation]:
    if pb is None:
        return []
    tag = "applications"
    resident = (400, 401, 403, 404, 409, 422, 500, 503, 504)
    base = "/v1/applications/{application_id}"
    return [
        Operation("POST", "/v1/applications", create_draft,
                  "Start a draft for a procedure (formJson: the form data as a JSON object in a string)",
                  "createDraft", tag, pb.CreateDraftRequest, pb.CreateDraftResponse, errors=resident),
        Operation("GET", "/v1/applications", list_applications, "The caller's own applications, newest first",
                  "listApplications", tag, pb.ListApplicationsRequest, pb.ListApplicationsResponse, body="none",
                  errors=(400, 401, 403, 500, 503, 504)),
        Operation("GET", base, get_application, "One own application with attachments, history and corrections",
                  "getApplication", tag, pb.GetApplicationRequest, pb.GetApplicationResponse, body="none",
                  errors=resident),
        Operation("PATCH", base, update_draft, "Replace the form data of a draft or of an application in 補正",
                  "updateDraft", tag, pb.UpdateDraftRequest, pb.UpdateDraftResponse, errors=resident),
        Operation("POST", base + "/attachments", upload_attachment,
                  "Upload one photo or PDF into an attachment slot (streamed to the server; EXIF/GPS removed)",
                  "uploadAttachment", tag, None, pb.UploadAttachmentResponse, body="multipart",
                  errors=(400, 401, 403, 404, 409, 413, 415, 422, 500, 503, 504), multipart_fields=UPLOAD_FIELDS),
        Operation("DELETE", base + "/attachments/{attachment_id}", remove_attachment,
                  "Take a file out of a draft or of an application in 補正", "removeAttachment", tag,
                  pb.RemoveAttachmentRequest, pb.RemoveAttachmentResponse, errors=resident),
        Operation("POST", base + "/prepare-submission", prepare_submission,
                  "The canonical bytes (base64) the card must sign with its signature key",
                  "prepareSubmission", tag, pb.PrepareSubmissionRequest, pb.PrepareSubmissionResponse,
                  errors=resident),
        Operation("POST", base + "/submit", submit,
                  "Submit with the signature (base64) and the signature certificate (base64 DER)",
                  "submitApplication", tag, pb.SubmitApplicationRequest, pb.SubmitApplicationResponse,
                  errors=resident),
        Operation("POST", base + "/resubmit", submit, "Answer a correction request (補正) with a new signature",
                  "resubmitApplication", tag, pb.SubmitApplicationRequest, pb.SubmitApplicationResponse,
                  errors=resident),
        Operation("POST", base + "/withdraw", withdraw, "Withdraw (取下げ) before a decision",
                  "withdrawApplication", tag, pb.WithdrawApplicationRequest, pb.WithdrawApplicationResponse,
                  errors=resident),
        Operation("GET", base + "/evidence", list_evidence, "The signed evidence kept for each submission",
                  "listSubmissionEvidence", tag, pb.ListSubmissionEvidenceRequest,
                  pb.ListSubmissionEvidenceResponse, body="none", errors=resident),
    ]
