"""Lossless removal of personal metadata from uploaded files (メタデータ除去).

JPEG and PNG are filtered segment by segment (chunk by chunk): what a decoder needs to show the
picture is copied byte for byte, everything else is dropped, so a photo of a document keeps every
pixel as it was taken. The filter is an allow-list, not a deny-list: a kind of segment it does not
know is dropped (JPEG APPn, COM; PNG ancillary chunks) or, where a decoder would need it, refused.

Kept in a JPEG: the frame, scans and tables (SOFn, DHT, DQT, DRI, DAC, DNL, SOS with its entropy-coded
data), the JFIF header (without its thumbnail), Adobe's APP14 (colour transform) and the ICC colour
profile (APP2 ICC_PROFILE). Dropped: EXIF (camera, dates, GPS, thumbnail), XMP, IPTC / Photoshop
(APP13), MPF and anything appended after the end of the image (secondary images, vendor trailers),
comments. Kept in a PNG: IHDR, PLTE, IDAT, IEND and the colour chunks (tRNS, gAMA, cHRM, sRGB, iCCP,
sBIT, bKGD, pHYs, hIST, cICP, mDCv, cLLi). Dropped: tEXt, zTXt, iTXt, eXIf, tIME and every other
ancillary chunk, APNG frames included (the still default image remains).

Orientation: a phone records "rotate by 90°" in EXIF instead of turning the pixels. So that the photo
still shows upright, the orientation tag alone is written back as a minimal EXIF block (one IFD entry,
nothing else) when it is not the default.

PDF: rewritten by pypdf from its document root: the Info dictionary (author, creator, producer,
dates), the XMP metadata streams of the document and its pages, page-piece data and earlier revisions
(incremental updates) are gone; pages and their content streams are copied as they are.

Whatever the filter cannot parse raises Unreadable: the upload is refused and nothing is stored.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Sequence

# Decompression-bomb guard: a photo of a document needs no more than this (as blobs.Image.MAX_IMAGE_PIXELS).
MAX_PIXELS = 60_000_000
ORIENTATION_TAG = 0x0112

Piece = bytes | memoryview


class Unreadable(Exception):
    """The file is not a well-formed file of its type (or uses a feature the filter refuses)."""


# ---- EXIF orientation ------------------------------------------------------------------------------

def orientation_of(tiff: Piece) -> int:
    """The Orientation tag (1-8) of IFD0 of a TIFF/EXIF block; 1 when absent or unreadable."""
    data = bytes(tiff[:65536]) if len(tiff) > 65536 else bytes(tiff)
    if len(data) < 8 or data[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if data[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, ifd)
        for index in range(min(count, 1000)):
            tag, kind, number = struct.unpack_from(order + "HHI", data, ifd + 2 + 12 * index)
            if tag == ORIENTATION_TAG and kind == 3 and number >= 1:  # SHORT, stored in the entry itself
                (value,) = struct.unpack_from(order + "H", data, ifd + 2 + 12 * index + 8)
                return value if 1 <= value <= 8 else 1
    except struct.error:
        return 1
    return 1


def minimal_tiff(orientation: int) -> bytes:
    """A TIFF block with IFD0 holding only the orientation: what is written back instead of the EXIF."""
    return b"MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">HHHIHHI", 1, ORIENTATION_TAG, 3, 1, orientation, 0, 0)


# ---- JPEG ----------------------------------------------------------------------------------------------

_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_TABLES = frozenset({0xC4, 0xCC, 0xDB, 0xDD, 0xDC})  # DHT, DAC, DQT, DRI, DNL
_SOS, _EOI, _APP0, _APP1, _APP2, _APP14, _COM = 0xDA, 0xD9, 0xE0, 0xE1, 0xE2, 0xEE, 0xFE
# Inside entropy-coded data a 0xFF is followed by 0x00 (stuffing) or a restart marker; anything else
# starts the next marker segment.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")


def _check_pixels(width: int, height: int, kind: str) -> None:
    if width == 0 or height == 0:
        raise Unreadable(f"the {kind} declares no pixels ({width}×{height})")
    if width * height > MAX_PIXELS:
        raise Unreadable(f"the {kind} has {width}×{height} pixels, more than {MAX_PIXELS}")


def scrub_jpeg(data: Piece) -> list[Piece]:
    """The pieces of the cleaned JPEG (slices of `data` and a few new bytes), in order."""
    view = memoryview(data)
    end = len(view)
    if bytes(view[:3]) != b"\xff\xd8\xff":
        raise Unreadable("not a JPEG (no start-of-image marker)")
    header: list[Piece] = [b"\xff\xd8"]
    body: list[Piece] = []
    orientation: int | None = None
    seen_frame = seen_scan = False
    pos = 2
    while True:
        if pos >= end or view[pos] != 0xFF:
            raise Unreadable(f"expected a marker at byte {pos}")
        while pos < end and view[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= end:
            raise Unreadable("the image ends inside a marker")
        marker = view[pos]
        pos += 1
        if marker == _EOI:
            if not seen_scan:
                raise Unreadable("the image has no scan")
            body.append(b"\xff\xd9")
            break  # what follows the end of the image (MPF images, vendor trailers) is dropped
        if pos + 2 > end:
            raise Unreadable("the image ends inside a segment header")
        length = view[pos] << 8 | view[pos + 1]
        if length < 2 or pos + length > end:
            raise Unreadable(f"a segment at byte {pos - 2} runs past the end of the file")
        payload = view[pos + 2:pos + length]
        segment = view[pos - 2:pos + length]
        pos += length
        if marker in _SOF:
            if seen_frame:
                raise Unreadable("more than one frame header")
            if len(payload) < 6:
                raise Unreadable("the frame header is too short")
            height, width = struct.unpack_from(">HH", payload, 1)
            _check_pixels(width, height, "image")
            seen_frame = True
            body.append(segment)
        elif marker in _TABLES:
            body.append(segment)
        elif marker == _SOS:
            if not seen_frame:
                raise Unreadable("a scan before the frame header")
            seen_scan = True
            body.append(segment)
            found = _NEXT_MARKER.search(view, pos)
            if found is None:
                raise Unreadable("the image data is cut off (no end-of-image marker)")
            body.append(view[pos:found.start()])
            pos = found.start()
        elif marker == _APP0:
            if bytes(payload[:5]) == b"JFIF\x00" and len(payload) >= 14 and len(header) == 1:
                # Version, units and density; the thumbnail (if any) is dropped.
                header.append(b"\xff\xe0\x00\x10" + bytes(payload[:12]) + b"\x00\x00")
        elif marker == _APP1:
            if bytes(payload[:6]) == b"Exif\x00\x00" and orientation is None:
                orientation = orientation_of(payload[6:])
        elif marker == _APP2:
            if bytes(payload[:12]) == b"ICC_PROFILE\x00":
                body.append(segment)
        elif marker == _APP14:
            if bytes(payload[:5]) == b"Adobe":
                body.append(segment)
        elif 0xE0 <= marker <= 0xEF or marker == _COM:
            pass  # XMP, IPTC/Photoshop, MPF, vendor data, comments
        else:
            raise Unreadable(f"an unsupported marker 0xFF{marker:02X} at byte {pos - length - 2}")
    if orientation and orientation != 1:
        tiff = minimal_tiff(orientation)
        header.append(b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\x00\x00" + tiff)
    return header + body


# ---- PNG -----------------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_KEEP = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT",
                       b"bKGD", b"pHYs", b"hIST", b"cICP", b"mDCv", b"cLLi"})


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def scrub_png(data: Piece) -> list[Piece]:
    """The pieces of the cleaned PNG (whole chunks of `data`, checked against their CRC)."""
    view = memoryview(data)
    end = len(view)
    if bytes(view[:8]) != PNG_SIGNATURE:
        raise Unreadable("not a PNG (no signature)")
    out: list[Piece] = [PNG_SIGNATURE]
    orientation: int | None = None
    seen_data = False
    pos = 8
    first = True
    while True:
        if pos + 12 > end:
            raise Unreadable("the image is cut off (no IEND chunk)")
        (length,) = struct.unpack_from(">I", view, pos)
        kind = bytes(view[pos + 4:pos + 8])
        if length > end - pos - 12:
            raise Unreadable(f"a chunk at byte {pos} runs past the end of the file")
        if not kind.isalpha():
            raise Unreadable(f"a malformed chunk type at byte {pos}")
        body = view[pos + 4:pos + 8 + length]
        (crc,) = struct.unpack_from(">I", view, pos + 8 + length)
        if zlib.crc32(body) != crc:
            raise Unreadable(f"the {kind.decode()} chunk at byte {pos} fails its CRC")
        chunk = view[pos:pos + 12 + length]
        pos += 12 + length
        if first:
            if kind != b"IHDR" or length != 13:
                raise Unreadable("the image does not start with its header chunk")
            width, height = struct.unpack_from(">II", view, pos - length - 4)
            _check_pixels(width, height, "image")
            first = False
        if kind == b"IDAT" and not seen_data:
            seen_data = True
            if orientation and orientation != 1:  # eXIf must come before the image data
                out.append(_png_chunk(b"eXIf", minimal_tiff(orientation)))
        if kind == b"eXIf":
            if orientation is None and not seen_data:
                orientation = orientation_of(body[4:])
        elif kind in _PNG_KEEP:
            out.append(chunk)
        elif kind[0:1].isupper():
            raise Unreadable(f"an unknown critical chunk {kind.decode()}")
        if kind == b"IEND":
            if not seen_data:
                raise Unreadable("the image has no data")
            return out  # anything after IEND is dropped


# ---- PDF -----------------------------------------------------------------------------------------------

def scrub_pdf(data: bytes) -> bytes:
    """The PDF rewritten without its Info dictionary, XMP metadata streams and earlier revisions."""
    import io
    import logging

    from pypdf import PdfReader, PdfWriter
    from pypdf.errors import DeprecationError, PyPdfError
    from pypdf.generic import NameObject

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # a repaired xref is not worth a log line per upload
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            # A PDF locked only against editing opens with the empty password; one that needs a
            # password to open cannot be checked or cleaned (nor read by staff).
            try:
                opened = reader.decrypt("")
            except (PyPdfError, NotImplementedError, ValueError) as exc:
                raise Unreadable(f"the PDF is encrypted ({exc})") from None
            if not opened:
                raise Unreadable("the PDF is protected by a password")
        if len(reader.pages) == 0:
            raise Unreadable("the PDF has no pages")
        writer = PdfWriter(clone_from=reader)
        writer.metadata = None
        writer.xmp_metadata = None
        root = writer.root_object
        for key in ("/PieceInfo",):
            root.pop(NameObject(key), None)
        for page in writer.pages:
            for key in ("/Metadata", "/PieceInfo"):
                page.pop(NameObject(key), None)
        writer.compress_identical_objects(remove_duplicates=False, remove_unreferenced=True)
        out = io.BytesIO()
        writer.write(out)
    except (Unreadable, DeprecationError):  # the latter is our mistake, not the file's
        raise
    except RecursionError:
        raise Unreadable("the PDF nests objects too deeply") from None
    except Exception as exc:  # noqa: BLE001 - pypdf raises many kinds on malformed input; all mean "unreadable"
        raise Unreadable(f"the PDF does not parse ({type(exc).__name__}: {str(exc)[:120]})") from None
    return out.getvalue()


def total(pieces: Sequence[Piece]) -> int:
    return sum(len(p) for p in pieces)
