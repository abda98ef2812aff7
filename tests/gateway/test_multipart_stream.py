"""The streaming multipart reader on its own: every file byte arrives once, in order, whatever the
chunking, and a network chunk in the middle of a file is handed on as it came (no copy)."""

from __future__ import annotations

import os

import pytest

from gateway.multipart import PartBegin, PartData, PartEnd, _Collector

BOUNDARY = b"testboundary42"


def body(payload: bytes) -> bytes:
    return (b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"slot\"\r\n\r\nother\r\n"
            b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n" + payload + b"\r\n--" + BOUNDARY + b"--\r\n")


def parts(chunks: list[bytes]) -> tuple[list[tuple[str, bytes]], list[PartData]]:
    collector = _Collector(BOUNDARY)
    found: list[tuple[str, bytes]] = []
    pieces: list[PartData] = []
    for chunk in chunks:
        for event in collector.feed(chunk):
            if isinstance(event, PartBegin):
                found.append((event.name, b""))
            elif isinstance(event, PartData):
                found[-1] = (found[-1][0], found[-1][1] + bytes(event.data))
                pieces.append(event)
            else:
                assert isinstance(event, PartEnd)
    assert collector.ended
    return found, pieces


@pytest.mark.parametrize("size", [1, 7, 13, 4096, 65536, 256 * 1024])
def test_every_byte_arrives_once_whatever_the_chunking(size):
    # Carriage returns and boundary look-alikes inside the file, so the parser's look-behind is used.
    payload = os.urandom(300_000) + b"\r\n--" + BOUNDARY[:5] + b"\r\n--" + os.urandom(1000)
    data = body(payload)
    found, _ = parts([data[i:i + size] for i in range(0, len(data), size)])
    assert found == [("slot", b"other"), ("file", payload)]


def test_a_whole_chunk_in_the_middle_of_a_file_is_handed_on_as_it_came():
    payload = bytes(range(256)).replace(b"\r", b"x") * 4096  # 1 MiB, no CR: no boundary candidate
    data = body(payload)
    head = data.index(payload[:64])
    middle = data[head + 1000:head + 1000 + 256 * 1024]
    chunks = [data[:head + 1000], middle, data[head + 1000 + len(middle):]]
    found, pieces = parts(chunks)
    assert found[-1] == ("file", payload)
    assert any(piece.data is chunks[1] for piece in pieces)  # the same object: not copied, not a view
