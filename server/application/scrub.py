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


class JpegScrubber:
    """The JPEG filter, fed the file as it arrives: `feed(chunk)` returns the cleaned pieces ready so far
    (views into the chunks and a few new bytes), `finish()` the rest, checking the image was complete.

    Nothing but a partial segment header or segment (at most 64 KiB) and the few kept segments before
    the first scan are held back: the entropy-coded data, nearly all of a photo, passes straight
    through. Output before the first scan is held so that the orientation block can go first.
    """

    def __init__(self) -> None:
        self._pending: bytes = b""
        self._offset = 0  # file offset of _pending[0]
        self._state = "start"  # start -> marker <-> entropy -> done
        self._header: list[Piece] = [b"\xff\xd8"]
        self._held: list[Piece] | None = []  # kept segments before the first scan
        self._orientation: int | None = None
        self._seen_frame = self._seen_scan = False

    def feed(self, chunk: Piece) -> list[Piece]:
        if self._state == "done":
            return []  # what follows the end of the image (MPF images, vendor trailers) is dropped
        data = (self._pending + bytes(chunk)) if self._pending else chunk
        view = memoryview(data)
        out: list[Piece] = []
        pos = self._run(view, out)
        self._pending = bytes(view[pos:]) if pos < len(view) else b""
        self._offset += pos
        return out

    def finish(self) -> list[Piece]:
        if self._state != "done":
            raise Unreadable("the image is cut off (no end-of-image marker)")
        return []

    def _emit(self, out: list[Piece], piece: Piece) -> None:
        (self._held if self._held is not None else out).append(piece)

    def _release_held(self, out: list[Piece]) -> None:
        out.extend(self._header)
        if self._orientation and self._orientation != 1:
            tiff = minimal_tiff(self._orientation)
            out.append(b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\x00\x00" + tiff)
        out.extend(self._held or ())
        self._held = None

    def _run(self, view: memoryview, out: list[Piece]) -> int:
        """Consume what can be consumed of `view`; returns the position of the first byte kept pending."""
        end = len(view)
        pos = 0
        if self._state == "start":
            if end < 3:
                return 0
            if bytes(view[:3]) != b"\xff\xd8\xff":
                raise Unreadable("not a JPEG (no start-of-image marker)")
            pos, self._state = 2, "marker"
        while pos < end:
            if self._state == "entropy":
                found = _NEXT_MARKER.search(view, pos)
                if found is None:
                    # A 0xFF at the very end may start a marker: decide when the next byte is here.
                    stop = end - 1 if view[end - 1] == 0xFF else end
                    if stop > pos:
                        out.append(view[pos:stop])
                    return stop
                if found.start() > pos:
                    out.append(view[pos:found.start()])
                pos, self._state = found.start(), "marker"
                continue
            start = pos
            if view[pos] != 0xFF:
                raise Unreadable(f"expected a marker at byte {self._offset + pos}")
            while pos < end and view[pos] == 0xFF:  # fill bytes
                pos += 1
            if pos >= end:
                return start
            marker = view[pos]
            if marker == _EOI:
                if not self._seen_scan:
                    raise Unreadable("the image has no scan")
                out.append(b"\xff\xd9")
                self._state = "done"
                return end
            if pos + 3 > end:
                return start
            length = view[pos + 1] << 8 | view[pos + 2]
            if length < 2:
                raise Unreadable(f"a segment at byte {self._offset + pos - 1} has a bad length")
            if pos + 1 + length > end:
                return start  # the rest of the segment is still to come (at most 64 KiB held)
            segment = view[pos - 1:pos + 1 + length]
            payload = segment[4:]
            pos += 1 + length
            self._segment(marker, segment, payload, out)
        return pos

    def _segment(self, marker: int, segment: memoryview, payload: memoryview, out: list[Piece]) -> None:
        if marker in _SOF:
            if self._seen_frame:
                raise Unreadable("more than one frame header")
            if len(payload) < 6:
                raise Unreadable("the frame header is too short")
            height, width = struct.unpack_from(">HH", payload, 1)
            _check_pixels(width, height, "image")
            self._seen_frame = True
            self._emit(out, segment)
        elif marker in _TABLES:
            self._emit(out, segment)
        elif marker == _SOS:
            if not self._seen_frame:
                raise Unreadable("a scan before the frame header")
            if self._held is not None:
                self._release_held(out)
            self._seen_scan = True
            out.append(segment)
            self._state = "entropy"
        elif marker == _APP0:
            if bytes(payload[:5]) == b"JFIF\x00" and len(payload) >= 14 and len(self._header) == 1 \
                    and self._held == []:
                # Version, units and density; the thumbnail (if any) is dropped.
                self._header.append(b"\xff\xe0\x00\x10" + bytes(payload[:12]) + b"\x00\x00")
        elif marker == _APP1:
            if bytes(payload[:6]) == b"Exif\x00\x00" and self._orientation is None and self._held is not None:
                self._orientation = orientation_of(payload[6:])
        elif marker == _APP2:
            if _plain_icc_profile(payload):
                self._emit(out, segment)
        elif marker == _APP14:
            if bytes(payload[:5]) == b"Adobe" and len(payload) >= 12:
                # Only its fixed 12 bytes (version, flags, colour transform): nothing may ride along.
                self._emit(out, b"\xff\xee\x00\x0e" + bytes(payload[:12]))
        elif 0xE0 <= marker <= 0xEF or marker == _COM:
            pass  # XMP, IPTC/Photoshop, MPF, vendor data, comments
        else:
            raise Unreadable(f"an unsupported marker 0xFF{marker:02X}")


def _plain_icc_profile(payload: Piece) -> bool:
    """An ICC colour profile in one segment whose declared size is exactly what the segment holds
    (a profile split over several segments, or one with bytes beyond its own size, is dropped:
    colours may shift slightly, but nothing can hide there)."""
    if bytes(payload[:12]) != b"ICC_PROFILE\x00" or len(payload) < 14 + 128:
        return False
    profile = payload[14:]
    return (payload[12] == 1 and payload[13] == 1 and int.from_bytes(profile[:4], "big") == len(profile)
            and bytes(profile[36:40]) == b"acsp")


def scrub_jpeg(data: Piece) -> list[Piece]:
    """The pieces of the cleaned JPEG (slices of `data` and a few new bytes), in order."""
    scrubber = JpegScrubber()
    pieces = scrubber.feed(data)
    if scrubber._state == "start":
        raise Unreadable("not a JPEG (no start-of-image marker)")
    return pieces + scrubber.finish()


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
        _drop_metadata_streams(writer.root_object)
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


def _drop_metadata_streams(root) -> None:
    """Remove every /Metadata (XMP) and /PieceInfo entry reachable from the document root: the
    catalog's, the pages', and those of images and forms (an edited picture carries its own XMP);
    page thumbnails and embedded files; and clean every embedded JPEG photo (a scanned page from a
    phone carries the photo's EXIF, GPS included) as an uploaded JPEG is cleaned."""
    from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject, NameObject, StreamObject

    keys = (NameObject("/Metadata"), NameObject("/PieceInfo"), NameObject("/Thumb"),
            NameObject("/EmbeddedFiles"))
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, IndirectObject):
            if (item.idnum, item.generation) in seen:
                continue
            seen.add((item.idnum, item.generation))
            item = item.get_object()
        if isinstance(item, DictionaryObject):  # stream objects included
            for key in keys:
                item.pop(key, None)
            if isinstance(item, StreamObject) and item.get("/Subtype") == "/Image":
                filters = item.get("/Filter")
                filters = list(filters) if isinstance(filters, ArrayObject) else [filters]
                if "/DCTDecode" in filters:
                    if filters != ["/DCTDecode"]:
                        raise Unreadable("a JPEG image inside the PDF is wrapped in other filters")
                    item._data = b"".join(bytes(p) for p in scrub_jpeg(item._data))
            stack.extend(item.values())
        elif isinstance(item, ArrayObject):
            stack.extend(item)


def total(pieces: Sequence[Piece]) -> int:
    return sum(len(p) for p in pieces)
