"""A resident's notices (お知らせ): inbox, read marks, survey answers, own records, and a live stream.

`GET /v1/notices/stream` is Server-Sent Events over NotificationService.StreamNotices: each notice is
an event whose `id` is its inbox cursor, so a browser's EventSource (or any client) reconnects with
`Last-Event-ID` and resumes with no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.api import Operation, call, json_message, query_message, to_json, unary
from gateway.backend import backend, metadata
from gateway.errors import GatewayError, status_of, status_response

try:
    from onestop.auth.v1 import auth_pb2, auth_pb2_grpc
    from onestop.notification.v1 import notification_pb2 as pb
    from onestop.notification.v1 import notification_pb2_grpc as pb_grpc
except ImportError:  # the notification area's stubs are not generated yet
    pb = pb_grpc = None

KEEPALIVE_SECONDS = 15.0
QUEUE_DEPTH = 32


def _stub(request: Request):
    return backend(request).stub(pb_grpc.NotificationServiceStub)


async def list_notices(request: Request) -> Response:
    return await unary(request, _stub(request).ListNotices, query_message(request, pb.ListNoticesRequest))


async def mark_read(request: Request) -> Response:
    return await unary(request, _stub(request).MarkNoticeRead, await json_message(request, pb.MarkNoticeReadRequest))


async def answer_survey(request: Request) -> Response:
    return await unary(request, _stub(request).AnswerSurvey, await json_message(request, pb.AnswerSurveyRequest))


async def self_information(request: Request) -> Response:
    return await unary(request, _stub(request).GetSelfInformation, pb.GetSelfInformationRequest())


def _after_cursor(request: Request) -> int:
    raw = request.headers.get("last-event-id") or request.query_params.get("afterCursor") \
        or request.query_params.get("after_cursor") or "0"
    if not raw.isdigit() or len(raw) > 18:
        raise GatewayError.field("Last-Event-ID", "a notice cursor (a whole number)", http_status=400)
    return int(raw)


def _event(notice) -> bytes:
    data = orjson.dumps(to_json(notice)).decode()
    return f"id: {notice.cursor}\nevent: notice\ndata: {data}\n\n".encode()


def _error_event(error: grpc.aio.AioRpcError) -> bytes:
    status = status_of(error)
    body = orjson.loads(status_response(status, 500).body)
    return f"event: error\ndata: {orjson.dumps(body).decode()}\n\n".encode()


async def stream(request: Request) -> Response:
    """SSE: the notices after Last-Event-ID (or ?afterCursor=), then new ones live."""
    after = _after_cursor(request)
    if "authorization" not in request.headers:
        raise GatewayError(401, "AUTHENTICATION_REQUIRED", "this stream needs a signed-in resident", code=16)
    # Server-streaming calls report a refusal only when read: check the token first, so a bad one is
    # an HTTP 401 rather than a 200 followed by an error event.
    await call(request, backend(request).stub(auth_pb2_grpc.AuthServiceStub).WhoAmI, auth_pb2.WhoAmIRequest())
    rpc = _stub(request).StreamNotices(pb.StreamNoticesRequest(after_cursor=after), metadata=metadata(request))
    queue: asyncio.Queue = asyncio.Queue(QUEUE_DEPTH)

    async def pump() -> None:
        try:
            async for reply in rpc:
                await queue.put(_event(reply.notice))
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                await queue.put(_error_event(error))
        finally:
            await queue.put(None)

    async def events():
        reader = asyncio.create_task(pump())
        try:
            yield b"retry: 3000\n\n"
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except asyncio.TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                if item is None:
                    break
                yield item
        finally:
            rpc.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


def operations() -> list[Operation]:
    if pb is None:
        return []
    tag = "notices"
    resident = (400, 401, 403, 404, 409, 422, 500, 503, 504)
    return [
        Operation("GET", "/v1/notices", list_notices, "The caller's inbox, newest first, with the unread count",
                  "listNotices", tag, pb.ListNoticesRequest, pb.ListNoticesResponse, body="none",
                  errors=(400, 401, 403, 500, 503, 504)),
        Operation("GET", "/v1/notices/stream", stream,
                  "Server-Sent Events: notices after Last-Event-ID (the cursor), then new ones live",
                  "streamNotices", tag, None, pb.Notice, body="none",
                  produces="text/event-stream", errors=(400, 401, 500, 503, 504)),
        Operation("POST", "/v1/notices/{notice_id}/read", mark_read, "Mark one notice of the inbox read",
                  "markNoticeRead", tag, pb.MarkNoticeReadRequest, pb.MarkNoticeReadResponse, errors=resident),
        Operation("POST", "/v1/notices/{notice_id}/answer", answer_survey, "Answer a survey notice, once",
                  "answerSurvey", tag, pb.AnswerSurveyRequest, pb.AnswerSurveyResponse, errors=resident),
        Operation("GET", "/v1/me/records", self_information,
                  "自己情報表示: the caller's own registry record, household, vaccinations, applications",
                  "getSelfInformation", tag, None, pb.GetSelfInformationResponse, body="none",
                  errors=(401, 404, 500, 503, 504)),
    ]
