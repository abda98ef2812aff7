"""Certificate PDFs: Japanese text (the standard CID font HeiseiMin-W3, as reportlab describes it),
the municipality and its mayor's seal line, serial, issue time (JST), verification code and its QR
code, on a light repeated 「複製」 copy-warning pattern. Rendering time is accumulated for the
benchmark.

The file is written directly (a dozen objects), not through reportlab's canvas: the canvas spent
about 5 ms a certificate formatting the same font description and background every time. The parts
every certificate shares (the font object, the background and fixed wording as one compressed
content stream) are made once per process; a certificate adds one small content stream, the QR
image (`server.issuance.qr`) and the xref table. reportlab still supplies the font's metrics.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from reportlab.lib.pagesizes import A4
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont

from server.clock import JST
from server.issuance import qr

FONT = "HeiseiMin-W3"
ENCODING = "UniJIS-UCS2-H"  # the font's CMap: text is shown as UCS-2 big-endian
_font_lock = threading.Lock()
_static_lock = threading.Lock()
_font_ready = False


def _ensure_font() -> None:
    global _font_ready
    if _font_ready:
        return
    with _font_lock:
        if not _font_ready:
            pdfmetrics.registerFont(UnicodeCIDFont(FONT))
            _font_ready = True


class RenderStats:
    """perf_counter accumulators: how much server time PDFs take. With ONESTOP_PDF_STATS_FILE set
    (bench/issuance.py does), each render rewrites "<seconds> <count>" there, so a benchmark can read
    a server process's figures (one pwrite on a descriptor kept open: cheaper than the render)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.count = 0
        self.path = os.environ.get("ONESTOP_PDF_STATS_FILE")
        self._fd: int | None = None

    def add(self, seconds: float) -> None:
        self.seconds += seconds
        self.count += 1
        if self.path:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
            os.pwrite(self._fd, f"{self.seconds:.6f} {self.count}".ljust(40).encode("ascii"), 0)

    def reset(self) -> None:
        self.seconds, self.count = 0.0, 0


STATS = RenderStats()


@dataclass
class CertificateContent:
    """Everything printed; built from the record read in the issuing transaction."""

    title: str
    municipality_name: str
    mayor_line: str
    serial: str
    verification_code: str
    issued_at: datetime
    lines: list[tuple[str, str]] = field(default_factory=list)
    footer: list[str] = field(default_factory=list)


def verification_url(code: str) -> str:
    """Upper case only, so the QR code uses the compact alphanumeric mode."""
    return f"HTTPS://VERIFY.ONESTOP.EXAMPLE/C/{code}"


def render(content: CertificateContent) -> bytes:
    started = time.perf_counter()
    try:
        return _render(content)
    finally:
        STATS.add(time.perf_counter() - started)


def _render(c: CertificateContent) -> bytes:
    """One A4 page: the shared parts (font, copy-warning background, fixed wording) are bytes made
    once per process; what differs per certificate is drawn into a small content stream."""
    static = _static()
    width, height = A4
    body = _Content()
    body.ops.append(b"0 g 0 G")
    body.text(c.title, 20, width / 2 - _width(c.title, 20) / 2, height - 80)
    serial = f"発行番号 {c.serial}"
    body.text(serial, 9, width - 50 - _width(serial, 9), height - 50)
    y = height - 130
    for label, value in c.lines:
        body.text(label, 11, 60, y)
        body.text(value, 11, 190, y)
        body.ops.append(b"%s %s m %s %s l S" % (_num(60), _num(y - 4), _num(width - 60), _num(y - 4)))
        y -= 24
    y -= 10
    for note in c.footer:
        body.text(note, 9, 60, y)
        y -= 16
    issued = c.issued_at.astimezone(JST)
    body.text(f"{issued:%Y年%m月%d日 %H時%M分} 交付", 11, 60, 180)
    body.text(c.mayor_line, 13, 250, 150)
    body.text(f"検証コード {c.verification_code}", 9, 60, 70)
    # The QR image, one pixel per module, drawn 90 pt wide: sharp at any zoom (no interpolation).
    body.ops.append(b"q 90 0 0 90 %s 40 cm /QR Do Q" % _num(width - 140))
    side, pixels = qr.image(verification_url(c.verification_code))
    image = zlib.compress(pixels, 6)
    contents = zlib.compress(b"\n".join(body.ops), 6)
    created = issued.strftime("D:%Y%m%d%H%M%S+09'00'").encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [ 3 0 R ] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [ 0 0 %s %s ] /Resources << /Font << /F1 4 0 R >>"
        b" /XObject << /QR 5 0 R >> /ProcSet [ /PDF /Text /ImageB ] >> /Contents [ 6 0 R 7 0 R ] >>"
        % (_num(width), _num(height)),
        static.font,
        b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray"
        b" /BitsPerComponent 8 /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream"
        % (side, side, len(image), image),
        static.background,
        b"<< /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream" % (len(contents), contents),
        b"<< /Title %s /Author %s /Producer (onestop) /CreationDate (%s) >>"
        % (_text_string(c.title), _text_string(c.municipality_name), created),
    ]
    return _document(objects, info=8)


def _num(value: float) -> bytes:
    """A PDF number: at most 4 decimals, no trailing zeros."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return (text if text != "-0" else "0").encode("ascii")


def _utf16(text: str) -> bytes:
    """The bytes of `text` in the font's UniJIS-UCS2-H encoding (UCS-2 big-endian), as a hex string."""
    return b"<" + text.encode("utf-16-be").hex().encode("ascii") + b">"


def _text_string(text: str) -> bytes:
    """A PDF text string (document information): UTF-16BE with its byte-order mark, in hex."""
    return b"<feff" + text.encode("utf-16-be").hex().encode("ascii") + b">"


def _width(text: str, size: float) -> float:
    _ensure_font()
    return pdfmetrics.stringWidth(text, FONT, size)


class _Content:
    """Page-description operators, one text run per call (font F1 is the Japanese CID font)."""

    def __init__(self) -> None:
        self.ops: list[bytes] = []

    def text(self, text: str, size: float, x: float, y: float) -> None:
        self.ops.append(b"BT /F1 %s Tf 1 0 0 1 %s %s Tm %s Tj ET" % (_num(size), _num(x), _num(y), _utf16(text)))


def _pdf_object(value) -> bytes:
    """reportlab's font description (a dict of PDF names, strings, numbers) in PDF syntax."""
    if isinstance(value, dict):
        return b"<< " + b" ".join(b"/%s %s" % (k.encode("ascii"), _pdf_object(v)) for k, v in value.items()) + b" >>"
    if isinstance(value, (list, tuple)):
        return b"[ " + b" ".join(_pdf_object(v) for v in value) + b" ]"
    if isinstance(value, str):
        return value.encode("ascii")  # already a PDF token: /Name or (string)
    return _num(value)


@dataclass(frozen=True)
class _Static:
    font: bytes
    background: bytes


_static_parts: _Static | None = None


def _static() -> _Static:
    """The font object and the first content stream (copy-warning background and fixed wording),
    made once: every certificate carries the same bytes for them."""
    global _static_parts
    if _static_parts is None:
        with _static_lock:
            if _static_parts is None:
                _static_parts = _make_static()
    return _static_parts


def _make_static() -> _Static:
    from reportlab.pdfbase._cidfontdata import CIDFontInfo

    info = dict(CIDFontInfo[FONT])
    info.update(Name="/F1", Encoding=f"/{ENCODING}")
    width, height = A4
    page = _Content()
    # Copy-warning background: a light repeated 「複製」 (stands out on a photocopy), rotated 30°.
    page.ops.append(b"q 0.92 g 0.866025 0.5 -0.5 0.866025 %s %s cm" % (_num(width / 2), _num(height / 2)))
    for y in range(-800, 800, 130):
        page.text("複製　　" * 7, 44, -620, y)  # rows span the rotated page corner to corner
    page.ops.append(b"Q 0 g")
    page.text("上記のとおり相違ないことを証明する。", 11, 60, 200)
    page.text("この証明書の真正性は検証コードで確認できます。コンビニ交付", 9, 60, 58)
    stream = zlib.compress(b"\n".join(page.ops), 9)
    return _Static(font=_pdf_object(info),
                   background=b"<< /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))


def _document(objects: list[bytes], *, info: int) -> bytes:
    """A PDF 1.4 file of `objects` (numbered from 1; the first is the catalog) with its xref table."""
    out = [b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"]
    offsets = []
    position = len(out[0])
    for number, body in enumerate(objects, start=1):
        chunk = b"%d 0 obj\n%s\nendobj\n" % (number, body)
        offsets.append(position)
        out.append(chunk)
        position += len(chunk)
    out.append(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.append(b"".join(b"%010d 00000 n \n" % offset for offset in offsets))
    out.append(b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n"
               % (len(objects) + 1, info, position))
    return b"".join(out)


class BlobStore:
    """Content-addressed files under settings.blob_dir: `<sha[:2]>/<sha>.pdf`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._folders: set[str] = set()  # folders known to exist (saves a mkdir per PDF)

    def path(self, sha: str) -> Path:
        return self.root / sha[:2] / f"{sha}.pdf"

    def put(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        folder = os.path.join(self.root, sha[:2])
        path = os.path.join(folder, f"{sha}.pdf")
        if not os.path.exists(path):
            if folder not in self._folders:
                os.makedirs(folder, exist_ok=True)
                self._folders.add(folder)
            tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(tmp, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        return sha

    def get(self, sha: str) -> bytes:
        return self.path(sha).read_bytes()
