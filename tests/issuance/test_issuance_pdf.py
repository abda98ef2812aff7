"""Certificate PDFs and their QR codes, in-process: what a printed page carries, read back with pypdf."""

from __future__ import annotations

import io
import random
from datetime import datetime, timezone

import segno
from pypdf import PdfReader

from server.issuance.kiosk import new_verification_code
from server.issuance.pdf import (COPY_WARNING_ROWS, QUIET_ZONE, STATS, CertificateContent, qr_image, qr_matrix,
                                 render, verification_url)


def segno_modules(data: str) -> list[list[bool]]:
    """The symbol as segno makes it choosing the version itself (what the PDFs carried before the
    version was fixed)."""
    return [[bool(v) for v in row] for row in segno.make_qr(data, error="m", mask=2, boost_error=False).matrix]


def content(**overrides) -> CertificateContent:
    fields = dict(
        title="住民票の写し", municipality_name="東京都テスト市", mayor_line="テスト市長　　　　【公印】",
        serial="131016-2026-0000042", verification_code="ABCD-EFGH-JKLM-NPQR",
        issued_at=datetime(2026, 12, 3, 1, 2, tzinfo=timezone.utc),
        lines=[("氏名", "山田 花子"), ("住所", "東京都テスト市本町1-2-3")],
        footer=["この写しは住民票の原本と相違ないことを証明する。"])
    fields.update(overrides)
    return CertificateContent(**fields)


def test_fixed_version_gives_the_symbol_segno_chooses_for_verification_urls():
    rng = random.Random(5)
    for _ in range(50):
        code = "-".join("".join(rng.choice("23456789ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(4)) for _ in range(4))
        url = verification_url(code)
        assert [[bool(v) for v in row] for row in qr_matrix(url)] == segno_modules(url), url
        assert len(qr_matrix(url)) == 29  # version 3


def test_data_too_long_for_version_3_gets_a_larger_symbol():
    data = "HTTPS://VERIFY.ONESTOP.EXAMPLE/C/" + "A" * 60
    assert len(qr_matrix(data)) > 29
    assert [[bool(v) for v in row] for row in qr_matrix(data)] == segno_modules(data)


def test_qr_image_has_a_quiet_zone_and_one_pixel_per_module():
    url = verification_url("ABCD-EFGH-JKLM-NPQR")
    image = qr_image(url)
    side = 29 + 2 * QUIET_ZONE
    assert image.mode == "L" and image.size == (side, side)
    pixels = image.tobytes()
    assert set(pixels) == {0, 255}
    rows = [pixels[r * side:(r + 1) * side] for r in range(side)]
    q = QUIET_ZONE
    assert all(v == 255 for row in rows[:q] + rows[-q:] for v in row)
    assert all(row[:q] == b"\xff" * q and row[-q:] == b"\xff" * q for row in rows)
    assert [[v == 0 for v in row[q:-q]] for row in rows[q:-q]] == segno_modules(url)


def test_pdf_carries_the_wording_the_copy_warning_and_the_document_details():
    data = render(content())
    reader = PdfReader(io.BytesIO(data))
    assert len(reader.pages) == 1
    text = reader.pages[0].extract_text()
    for expected in ("住民票の写し", "発行番号 131016-2026-0000042", "氏名", "山田 花子", "東京都テスト市本町1-2-3",
                     "この写しは住民票の原本と相違ないことを証明する。", "上記のとおり相違ないことを証明する。",
                     "2026年12月03日 10時02分 交付", "テスト市長", "検証コード ABCD-EFGH-JKLM-NPQR",
                     "この証明書の真正性は検証コードで確認できます。"):
        assert expected in text, expected
    assert text.count("複製") == COPY_WARNING_ROWS * 7  # the background pattern: 13 rows of 7
    assert COPY_WARNING_ROWS == 13
    assert reader.metadata.title == "住民票の写し" and reader.metadata.author == "東京都テスト市"
    width, height = reader.pages[0].mediabox.width, reader.pages[0].mediabox.height
    assert (round(float(width)), round(float(height))) == (595, 842)  # A4


def test_pdf_qr_image_reads_back_as_the_verification_urls_symbol():
    data = render(content(verification_code="WXYZ-2345-6789-ABCD"))
    images = PdfReader(io.BytesIO(data)).pages[0].images
    assert len(images) == 1
    picture = images[0].image.convert("L")
    expected = segno_modules(verification_url("WXYZ-2345-6789-ABCD"))
    quiet = (picture.width - len(expected)) // 2
    got = [[picture.getpixel((quiet + c, quiet + r)) < 128 for c in range(len(expected))]
           for r in range(len(expected))]
    assert got == expected


def test_every_pdf_carries_the_font_description_whole():
    """The font object is formatted once and reused: each file still holds all of it."""
    first, second = render(content()), render(content(verification_code="ZZZZ-ZZZZ-ZZZZ-ZZZZ"))
    for data in (first, second):
        fonts = PdfReader(io.BytesIO(data)).pages[0]["/Resources"]["/Font"]
        described = [f.get_object() for f in fonts.values()]
        japanese = [f for f in described if f["/BaseFont"] == "/HeiseiMin-W3"]
        assert len(japanese) == 1 and japanese[0]["/Encoding"] == "/UniJIS-UCS2-H"
        descendant = japanese[0]["/DescendantFonts"][0].get_object()
        assert descendant["/CIDSystemInfo"]["/Ordering"] == "Japan1" and len(descendant["/W"]) > 50
    assert "ZZZZ-ZZZZ-ZZZZ-ZZZZ" in PdfReader(io.BytesIO(second)).pages[0].extract_text()


def test_rendering_is_counted():
    before = STATS.count
    render(content(verification_code=new_verification_code()))
    assert STATS.count == before + 1 and STATS.seconds > 0
