"""Certificate PDFs: Japanese text (reportlab's built-in CID font), the municipality and its mayor's
seal line, serial, issue time (JST), verification code and its QR code (segno), on a light
repeated 「複製」 copy-warning pattern. Rendering time is accumulated for the benchmark.

Cost (a PDF is rendered in the issuing transaction, on the event loop's thread): reportlab with its
C accelerator (rl_accel) and without the ASCII85 pass over streams; the font's PDF description,
the same in every file, formatted once per process instead of once per PDF; the background as one
text object; segno with the version and mask fixed (no searches), its matrix turned into image
bytes with one translate per row.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import segno
from PIL import Image
from reportlab import rl_config
from reportlab.lib.pagesizes import A4
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfdoc, pdfmetrics
from reportlab.pdfbase.cidfonts import CIDFontInfo, UnicodeCIDFont, structToPDF
from reportlab.pdfgen import canvas

from server.clock import JST

FONT = "HeiseiMin-W3"
# Streams are Flate-compressed binary; the ASCII85 pass over them (reportlab's default) only makes
# them a quarter larger and costs time. The server renders nothing else with reportlab.
rl_config.useA85 = 0
_font_lock = threading.Lock()
_font_ready = False


class _FormattedObject(pdfdoc.PDFObject):
    """A PDF object whose bytes are already known."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def format(self, document) -> bytes:
        return self.data


class _JapaneseFont(UnicodeCIDFont):
    """reportlab's UnicodeCIDFont, but its PDF description (a dictionary with a long widths array
    and no references to other objects) is formatted once per internal name and reused: reportlab
    rebuilt and formatted it for every document, a third of a certificate's rendering time."""

    _formatted: dict[str, bytes] = {}

    def addObjects(self, doc) -> None:
        internal_name = "F" + repr(len(doc.fontMapping) + 1)
        data = self._formatted.get(internal_name)
        if data is None:
            description = dict(CIDFontInfo[self.face.name])
            description["Name"] = "/" + internal_name
            description["Encoding"] = "/" + self.encodingName
            data = self._formatted[internal_name] = structToPDF(description).format(doc)
        reference = doc.Reference(_FormattedObject(data), internal_name)
        doc.idToObject["BasicFonts"].dict[internal_name] = reference
        doc.fontMapping[self.name] = "/" + internal_name


def ensure_font() -> None:
    global _font_ready
    if _font_ready:
        return
    with _font_lock:
        if not _font_ready:
            pdfmetrics.registerFont(_JapaneseFont(FONT))
            _font_ready = True


class RenderStats:
    """CPU-time accumulators: how much server time PDFs take (the worker's renders are added by the
    server process). With `path` set (settings.pdf_stats_file; bench/issuance.py sets it), each render
    rewrites "<seconds> <count>" there, so a benchmark can read a server process's figures (one
    pwrite on a descriptor kept open: cheaper than the render)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.count = 0
        self.path: str | None = None
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
    started = time.thread_time()  # CPU time: what rendering costs, not how long it waited for a core
    try:
        return _render(content)
    finally:
        STATS.add(time.thread_time() - started)


COPY_WARNING = "複製　　" * 7  # one row of the background; rows span the rotated page corner to corner
COPY_WARNING_ROWS = 13


def _render(c: CertificateContent) -> bytes:
    ensure_font()
    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=A4, pageCompression=1, initialFontName=FONT)
    pdf.setTitle(c.title)
    pdf.setAuthor(c.municipality_name)
    width, height = A4
    # Copy-warning background: a light repeated 「複製」 (stands out on a photocopy), rotated 30°,
    # rows 130 pt apart from y = 760 down to -800, as one text object.
    pdf.saveState()
    pdf.setFillGray(0.92)
    pdf.translate(width / 2, height / 2)
    pdf.rotate(30)
    background = pdf.beginText(-620, 760)
    background.setFont(FONT, 44, leading=130)
    for _ in range(COPY_WARNING_ROWS):
        background.textLine(COPY_WARNING)
    pdf.drawText(background)
    pdf.restoreState()

    pdf.setFillGray(0)
    pdf.setFont(FONT, 20)
    pdf.drawCentredString(width / 2, height - 80, c.title)
    pdf.setFont(FONT, 9)
    pdf.drawRightString(width - 50, height - 50, f"発行番号 {c.serial}")
    y = height - 130
    pdf.setFont(FONT, 11)
    for label, value in c.lines:
        pdf.drawString(60, y, label)
        pdf.drawString(190, y, value)
        pdf.line(60, y - 4, width - 60, y - 4)
        y -= 24
    y -= 10
    pdf.setFont(FONT, 9)
    for note in c.footer:
        pdf.drawString(60, y, note)
        y -= 16
    issued = c.issued_at.astimezone(JST)
    pdf.setFont(FONT, 11)
    pdf.drawString(60, 200, "上記のとおり相違ないことを証明する。")
    pdf.drawString(60, 180, f"{issued:%Y年%m月%d日 %H時%M分} 交付")
    pdf.setFont(FONT, 13)
    pdf.drawString(250, 150, c.mayor_line)
    # Verification code and its QR code.
    pdf.setFont(FONT, 9)
    pdf.drawString(60, 70, f"検証コード {c.verification_code}")
    pdf.drawString(60, 58, "この証明書の真正性は検証コードで確認できます。コンビニ交付")
    _draw_qr(pdf, verification_url(c.verification_code), x=width - 140, y=40, size=90)
    pdf.showPage()
    pdf.save()
    return out.getvalue()


# module value 1 (dark) -> grey 0 (black), 0 (light) -> 255 (white)
_GREY = bytes.maketrans(b"\x00\x01", b"\xff\x00")
QUIET_ZONE = 4


def qr_matrix(data: str) -> tuple:
    """The QR symbol's modules (rows of 0/1). Version 3 (every verification URL fits it: 52
    alphanumeric characters of the 61 that 3-M holds) and mask 2 are fixed, which skips segno's
    searches for both; any mask reads. Longer data gets the version it needs."""
    try:
        return segno.make_qr(data, error="m", version=3, mask=2, boost_error=False).matrix
    except segno.DataOverflowError:
        return segno.make_qr(data, error="m", mask=2, boost_error=False).matrix


def qr_image(data: str, quiet: int = QUIET_ZONE) -> Image.Image:
    """The QR symbol as an 8-bit grey image, one pixel per module, with a light quiet zone."""
    rows = qr_matrix(data)
    side = len(rows) + 2 * quiet
    blank = b"\xff" * (side * quiet)
    pad = b"\xff" * quiet
    raw = blank + b"".join(pad + bytes(row).translate(_GREY) + pad for row in rows) + blank
    return Image.frombytes("L", (side, side), raw)


def _draw_qr(pdf: canvas.Canvas, data: str, *, x: float, y: float, size: float) -> None:
    """The QR code as an image, one pixel per module (sharp at any zoom: no interpolation)."""
    pdf.drawImage(ImageReader(qr_image(data)), x, y, width=size, height=size)


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
