"""Certificate PDFs and their QR codes, in-process: what a printed page carries, read back with pypdf;
and the fast QR encoder against segno, module for module."""

from __future__ import annotations

import io
import random
from datetime import datetime, timezone

import segno
from pypdf import PdfReader

from server.issuance import qr
from server.issuance.kiosk import new_verification_code
from server.issuance.pdf import STATS, CertificateContent, render, verification_url


def segno_modules(data: str) -> list[list[bool]]:
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


def test_qr_of_verification_urls_is_segnos_symbol():
    rng = random.Random(5)
    for _ in range(300):
        code = "-".join("".join(rng.choice("23456789ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(4)) for _ in range(4))
        url = verification_url(code)
        assert qr.fits(url)
        assert qr.modules(url) == segno_modules(url), url


def test_qr_at_every_length_and_character_of_version_3m_is_segnos_symbol():
    rng = random.Random(11)
    for length in range(qr.MIN_LENGTH - 2, qr.MAX_LENGTH + 3):  # including the lengths segno pads oddly
        for _ in range(6):
            data = "".join(rng.choice(qr.ALPHANUMERIC) for _ in range(length))
            assert qr.modules(data) == segno_modules(data), (length, data)


def test_qr_outside_version_3m_falls_back_to_segno():
    for data in ("HTTPS://A", "lower case is byte mode: " + "x" * 30, "9" * 200):
        assert not qr.fits(data)
        assert qr.modules(data) == segno_modules(data)


def test_qr_image_has_a_quiet_zone_and_one_pixel_per_module():
    url = verification_url("ABCD-EFGH-JKLM-NPQR")
    side, pixels = qr.image(url, quiet=4)
    assert side == qr.SIZE + 8 and len(pixels) == side * side and set(pixels) == {0, 255}
    rows = [pixels[r * side:(r + 1) * side] for r in range(side)]
    assert all(v == 255 for row in rows[:4] + rows[-4:] for v in row)
    assert all(row[:4] == b"\xff" * 4 and row[-4:] == b"\xff" * 4 for row in rows)
    assert [[v == 0 for v in row[4:-4]] for row in rows[4:-4]] == segno_modules(url)


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
    assert text.count("複製") == 13 * 7  # the background pattern: 13 rows of 7
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


def test_pdf_is_the_same_bytes_for_the_same_content_and_differs_with_the_code():
    assert render(content()) == render(content())
    other = render(content(verification_code="ZZZZ-ZZZZ-ZZZZ-ZZZZ"))
    assert other != render(content())
    assert "ZZZZ-ZZZZ-ZZZZ-ZZZZ" in PdfReader(io.BytesIO(other)).pages[0].extract_text()


def test_rendering_is_counted():
    before = STATS.count
    render(content(verification_code=new_verification_code()))
    assert STATS.count == before + 1 and STATS.seconds > 0
