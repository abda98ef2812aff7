"""A streaming multipart/form-data reader: request.stream() -> python-multipart's parser -> events.

Nothing is buffered beyond one network chunk: the parser's callbacks turn each chunk into events
(`PartBegin`, `PartData`, `PartEnd`) that the caller consumes before the next chunk is read, so a
route can forward a file into a gRPC client stream as it arrives. The iterator ends normally only
when the closing boundary arrived; a body that stops early raises GatewayError (400), a client that
disconnects raises starlette's ClientDisconnect, and a body over the limit raises GatewayError (413)
from the BodyLimitMiddleware.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from gateway.errors import GatewayError, unsupported_media_type


@dataclass
class PartBegin:
    name: str
    filename: str | None
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class PartData:
    """A piece of a part's body: the network chunk itself, or a zero-copy view into it, where the parser
    allows it.

    Valid as long as the caller holds it (the view keeps its chunk alive); never a view into the
    parser's own reused buffers."""

    data: bytes | memoryview


@dataclass
class PartEnd:
    pass


Event = PartBegin | PartData | PartEnd


def boundary_of(request: Request) -> bytes:
    """The boundary of a multipart/form-data request; anything else is 415."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        raise unsupported_media_type("the request must be multipart/form-data")
    boundary = params.get(b"boundary")
    if not boundary:
        raise GatewayError(400, "MALFORMED_MULTIPART", "the multipart Content-Type has no boundary")
    return boundary


class _Collector:
    def __init__(self, boundary: bytes) -> None:
        self.events: list[Event] = []
        self.ended = False
        self._headers: dict[str, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()
        self.parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": lambda: self.events.append(PartEnd()),
            "on_end": self._end,
        })

    def _part_data(self, data: bytes | bytearray, start: int, end: int) -> None:
        # The parser hands out either the chunk we fed it (immutable bytes: a view is safe and saves a
        # copy of every file byte; the middle of a file is the whole chunk, handed on as it is) or its
        # look-behind buffer (a bytearray it reuses: copied).
        if start < end:
            if isinstance(data, bytes):
                piece = data if start == 0 and end == len(data) else memoryview(data)[start:end]
            else:
                piece = bytes(data[start:end])
            self.events.append(PartData(piece))

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_end(self) -> None:
        # Kept as bytes: phones send UTF-8 file names, which the options parser takes only as bytes.
        self._headers[self._field.decode("latin-1").strip().lower()] = bytes(self._value).strip()
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        content_type = parse_options_header(self._headers.get("content-type", b""))[0].decode("latin-1")
        headers = {k: v.decode("utf-8", "replace") for k, v in self._headers.items()}
        self.events.append(PartBegin(name, filename.decode("utf-8", "replace") if filename is not None else None,
                                     content_type.lower(), headers))

    def _end(self) -> None:
        self.ended = True

    def feed(self, chunk: bytes) -> list[Event]:
        try:
            self.parser.write(chunk)
        except MultipartParseError as exc:
            raise GatewayError(400, "MALFORMED_MULTIPART", f"the multipart body does not parse: {exc}") from None
        events, self.events = self.events, []
        return events


async def events(request: Request) -> AsyncIterator[Event]:
    """The body's multipart events, chunk by chunk; ends only after the closing boundary."""
    collector = _Collector(boundary_of(request))
    async for chunk in request.stream():
        if not chunk:
            continue
        for event in collector.feed(chunk):
            yield event
    if not collector.ended:
        raise GatewayError(400, "MALFORMED_MULTIPART", "the multipart body ended before its closing boundary")


async def read_field(stream: AsyncIterator[Event], name: str, limit: int = 4096) -> str:
    """The rest of a small text part (after its PartBegin), at most `limit` bytes."""
    value = bytearray()
    async for event in stream:
        if isinstance(event, PartData):
            value.extend(event.data)
            if len(value) > limit:
                raise GatewayError.field(name, f"at most {limit} bytes")
        elif isinstance(event, PartEnd):
            break
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise GatewayError.field(name, "not UTF-8") from None
