"""Certificate PDFs: Japanese text (reportlab's built-in CID font), the municipality and its mayor's
seal line, serial, issue time (JST), verification code and its QR code, on a light repeated 「複製」
copy-warning pattern. Rendering time is accumulated for the benchmark.
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
from reportlab.lib.utils import ImageReader
from reportlab.lib.pagesizes import A4
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen import canvas

from server.clock import JST

FONT = "HeiseiMin-W3"
_font_lock = threading.Lock()
_font_ready = False


def _ensure_font() -> None:
    global _font_ready
    with _font_lock:
        if not _font_ready:
            pdfmetrics.registerFont(UnicodeCIDFont(FONT))
            _font_ready = True


class RenderStats:
    """perf_counter accumulators: how much server time PDFs take. With ONESTOP_PDF_STATS_FILE set
    (bench/issuance.py does), each render rewrites "<seconds> <count>" there, so a benchmark can read
    a server process's figures."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.count = 0
        self.path = os.environ.get("ONESTOP_PDF_STATS_FILE")

    def add(self, seconds: float) -> None:
        self.seconds += seconds
        self.count += 1
        if self.path:
            Path(self.path).write_text(f"{self.seconds:.6f} {self.count}")

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
    _ensure_font()
    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=A4, pageCompression=1)
    pdf.setTitle(c.title)
    pdf.setAuthor(c.municipality_name)
    width, height = A4
    # Copy-warning background: a light repeated 「複製」 (stands out on a photocopy).
    pdf.saveState()
    pdf.setFillGray(0.92)
    pdf.setFont(FONT, 44)
    pdf.translate(width / 2, height / 2)
    pdf.rotate(30)
    for y in range(-800, 800, 130):
        pdf.drawString(-620, y, "複製　　" * 7)  # rows span the rotated page corner to corner
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


def _draw_qr(pdf: canvas.Canvas, data: str, *, x: float, y: float, size: float) -> None:
    """The QR code as a 1-bit image, one pixel per module (sharp at any zoom: no interpolation)."""
    # A fixed mask skips segno's search for the best one (two thirds of the time); any mask reads.
    qr = segno.make_qr(data, error="m", mask=2, boost_error=False)
    quiet = 4
    rows = [bytes(0 if dark else 255 for dark in row) for row in qr.matrix]
    n = len(rows) + 2 * quiet
    blank = bytes([255]) * n
    pad = bytes([255]) * quiet
    raw = blank * quiet + b"".join(pad + row + pad for row in rows) + blank * quiet
    image = Image.frombytes("L", (n, n), raw).convert("1")
    pdf.drawImage(ImageReader(image), x, y, width=size, height=size)


class BlobStore:
    """Content-addressed files under settings.blob_dir: `<sha[:2]>/<sha>.pdf`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha: str) -> Path:
        return self.root / sha[:2] / f"{sha}.pdf"

    def put(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.path(sha)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return sha

    def get(self, sha: str) -> bytes:
        return self.path(sha).read_bytes()
