"""Lossless metadata removal (server.application.scrub): every pixel kept, every personal segment gone,
and what does not parse refused."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image, ImageCms, ImageOps, PngImagePlugin

from server.application import scrub
from server.application.blobs import BlobStore
from tests.application.support import jpeg_bytes

XMP = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
       b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
       b'xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" photoshop:City="XMP-CHIYODA"/></rdf:RDF>'
       b'</x:xmpmeta><?xpacket end="w"?>')
PERSONAL = (b"PhoneMaker", b"PhoneModel", b"CameraApp", b"XMP-CHIYODA", b"IPTC-YAMADA", b"COMMENT-YAMADA",
            b"TRAILER-SECRET", b"Exif", b"xmpmeta", b"Photoshop 3.0")


def joined(pieces) -> bytes:
    return b"".join(bytes(p) for p in pieces)


def pixels(data: bytes) -> tuple[tuple[int, int], str, bytes]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size, image.mode, image.tobytes()


def camera_exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x0110] = "PhoneModel"
    exif[0x0131] = "CameraApp 1.0"
    if orientation is not None:
        exif[0x0112] = orientation
    exif[0x8825] = {1: "N", 2: (35.0, 41.0, 22.0), 3: "E", 4: (139.0, 45.0, 10.0)}
    return exif


def noisy(size=(97, 61), mode="RGB") -> Image.Image:
    """An image with detail everywhere (a re-encode would change it), odd sizes (partial MCUs)."""
    image = Image.effect_noise(size, 60).convert(mode) if mode != "L" else Image.effect_noise(size, 60)
    return Image.merge("RGB", [image.getchannel(0), Image.linear_gradient("L").resize(size),
                               image.getchannel(0).transpose(Image.Transpose.FLIP_LEFT_RIGHT)]) if mode == "RGB" else image


def insert_after_soi(jpeg: bytes, *segments: bytes) -> bytes:
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def phone_jpeg(*, orientation: int | None = None, progressive: bool = False, icc: bool = False) -> bytes:
    out = io.BytesIO()
    extra = {"icc_profile": ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()} if icc else {}
    noisy().save(out, "JPEG", exif=camera_exif(orientation), xmp=XMP, comment=b"COMMENT-YAMADA", quality=92,
                 progressive=progressive, **extra)
    iptc = segment(0xED, b"Photoshop 3.0\x00" + b"8BIM\x04\x04\x00\x00\x00\x00\x00\x0f\x1c\x02\x50\x00\x0bIPTC-YAMADA")
    trailer = jpeg_bytes(gps=True) + b"TRAILER-SECRET"  # an MPF secondary image / vendor trailer after EOI
    return insert_after_soi(out.getvalue(), iptc, segment(0xE4, b"vendor-TRAILER-SECRET")) + trailer


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_jpeg_keeps_every_pixel_and_loses_every_personal_segment(progressive):
    original = phone_jpeg(progressive=progressive)
    for marker in PERSONAL:
        assert marker in original, marker  # the fixture really carries each kind
    cleaned = joined(scrub.scrub_jpeg(original))
    for marker in PERSONAL:
        assert marker not in cleaned, marker
    assert pixels(cleaned) == pixels(original)  # lossless: the same decoded pixels, bit for bit
    with Image.open(io.BytesIO(cleaned)) as image:
        assert len(image.getexif()) == 0 and "xmp" not in image.info and "comment" not in image.info
        assert image.info.get("progressive", 0) == (1 if progressive else 0)
    assert cleaned.endswith(b"\xff\xd9") and len(cleaned) < len(original)


def test_jpeg_keeps_its_colour_profile_and_jfif_header():
    original = phone_jpeg(icc=True)
    with Image.open(io.BytesIO(original)) as image:
        profile = image.info["icc_profile"]
    cleaned = joined(scrub.scrub_jpeg(original))
    with Image.open(io.BytesIO(cleaned)) as image:
        assert image.info["icc_profile"] == profile
    plain = jpeg_bytes()
    assert plain[6:11] == b"JFIF\x00"
    assert joined(scrub.scrub_jpeg(plain)) == plain  # nothing to remove: byte for byte the same


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_jpeg_orientation_is_all_that_is_written_back(orientation):
    original = phone_jpeg(orientation=orientation)
    cleaned = joined(scrub.scrub_jpeg(original))
    assert pixels(cleaned) == pixels(original)
    with Image.open(io.BytesIO(cleaned)) as image:
        exif = image.getexif()
        assert dict(exif) == ({} if orientation == 1 else {0x0112: orientation})
        assert not exif.get_ifd(0x8825) and not exif.get_ifd(0x8769)
        upright = ImageOps.exif_transpose(image)
    with Image.open(io.BytesIO(original)) as image:
        assert upright.tobytes() == ImageOps.exif_transpose(image).tobytes()  # shown the same way as taken
    for marker in PERSONAL[:6]:
        assert marker not in cleaned


@pytest.mark.parametrize("case", ["empty", "garbage", "cut in scan", "cut in header", "bad length", "no scan",
                                  "scan before frame", "too many pixels", "zero width", "two frames"])
def test_jpeg_that_does_not_parse_is_refused(case):
    good = jpeg_bytes(size=(200, 150))
    sos = good.index(b"\xff\xda")
    sof = good.index(b"\xff\xc0")
    sof_segment = good[sof:sof + 2 + struct.unpack(">H", good[sof + 2:sof + 4])[0]]
    data = {
        "empty": b"\xff\xd8\xff",
        "garbage": b"\xff\xd8\xff" + b"garbage" * 50,
        "cut in scan": good[:sos + 200],
        "cut in header": good[:sof + 5],
        "bad length": good[:sof] + b"\xff\xc0\xff\xff" + good[sof + 4:],
        "no scan": good[:sos] + b"\xff\xd9",
        "scan before frame": good[:sof] + good[sos:],
        "too many pixels": good[:sof + 5] + struct.pack(">HH", 10_000, 10_000) + good[sof + 9:],
        "zero width": good[:sof + 5] + struct.pack(">HH", 150, 0) + good[sof + 9:],
        "two frames": good[:sof] + sof_segment + good[sof:],
    }[case]
    with pytest.raises(scrub.Unreadable):
        scrub.scrub_jpeg(data)


def test_jpeg_with_restart_markers_and_fill_bytes():
    out = io.BytesIO()
    noisy((130, 90)).save(out, "JPEG", quality=90, restart_marker_blocks=2, exif=camera_exif())
    original = out.getvalue()
    assert b"\xff\xdd" in original  # DRI: restart markers inside the scan
    # Fill bytes before a marker are allowed by the standard.
    sos = original.index(b"\xff\xda")
    padded = original[:sos] + b"\xff\xff" + original[sos:]
    for data in (original, padded):
        cleaned = joined(scrub.scrub_jpeg(data))
        assert pixels(cleaned) == pixels(original) and b"PhoneMaker" not in cleaned


# ---- PNG ----------------------------------------------------------------------------------------------

def phone_png(orientation: int | None = None, mode: str = "RGBA") -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "PNG-YAMADA")
    info.add_text("Comment", "PNG-ZTXT-YAMADA" * 20, zip=True)
    info.add_itxt("Location", "千代田区 PNG-ITXT", lang="ja", tkey="場所")
    info.add(b"tIME", struct.pack(">HBBBBB", 2026, 12, 3, 10, 0, 0))
    info.add(b"prVt", b"PRIVATE-CHUNK")
    image = noisy((53, 41)).convert(mode)
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=info, exif=camera_exif(orientation))
    return out.getvalue()


def png_chunks(data: bytes) -> list[bytes]:
    kinds, pos = [], 8
    while pos < len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        kinds.append(data[pos + 4:pos + 8])
        pos += 12 + length
    return kinds


@pytest.mark.parametrize("mode", ["RGBA", "RGB", "P", "L"])
def test_png_keeps_every_pixel_and_loses_text_exif_and_time(mode):
    original = phone_png(mode=mode)
    assert {b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME", b"prVt"} <= set(png_chunks(original))
    cleaned = joined(scrub.scrub_png(original + b"TRAILER-SECRET"))
    assert set(png_chunks(cleaned)) <= {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"}
    for marker in (b"PNG-YAMADA", b"PNG-ITXT", b"PhoneMaker", b"PRIVATE-CHUNK", b"TRAILER-SECRET"):
        assert marker not in cleaned
    assert pixels(cleaned) == pixels(original)


def test_png_orientation_is_kept_alone():
    original = phone_png(orientation=6)
    cleaned = joined(scrub.scrub_png(original))
    assert png_chunks(cleaned).count(b"eXIf") == 1
    assert png_chunks(cleaned).index(b"eXIf") < png_chunks(cleaned).index(b"IDAT")
    with Image.open(io.BytesIO(cleaned)) as image:
        assert dict(image.getexif()) == {0x0112: 6}
    assert b"PhoneMaker" not in cleaned and pixels(cleaned) == pixels(original)


@pytest.mark.parametrize("case", ["bad crc", "cut", "no IEND", "header not first", "unknown critical chunk",
                                  "too many pixels"])
def test_png_that_does_not_parse_is_refused(case):
    good = phone_png()
    idat = good.index(b"IDAT") - 4

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
    data = {
        "bad crc": good[:idat + 10] + bytes([good[idat + 10] ^ 1]) + good[idat + 11:],
        "cut": good[:idat + 30],
        "no IEND": good[:-12],
        "header not first": good[:8] + chunk(b"gAMA", b"\0\0\xb1\x8f") + good[8:],
        "unknown critical chunk": good[:idat] + chunk(b"ABCD", b"x") + good[idat:],
        "too many pixels": good[:8] + ihdr + good[8 + 25:],
    }[case]
    with pytest.raises(scrub.Unreadable):
        scrub.scrub_png(data)


# ---- the store's cleaning step ----------------------------------------------------------------------

def test_clean_writes_hashes_and_maps_nothing_left_open(tmp_path):
    import hashlib

    store = BlobStore(tmp_path / "blobs")
    source = tmp_path / "upload"
    source.write_bytes(phone_jpeg(orientation=6))
    clean = store.clean(source, "image/jpeg", store.temp_path())
    data = clean.path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == clean.sha256 and len(data) == clean.size
    assert data == joined(scrub.scrub_jpeg(source.read_bytes()))
    blob = store.adopt(clean)
    assert blob.path == store.path_for(clean.sha256) and blob.path.read_bytes() == data
    assert not clean.path.exists()
    source.write_bytes(b"\xff\xd8\xff" + b"\x00" * 100)
    with pytest.raises(scrub.Unreadable):
        store.clean(source, "image/jpeg", store.temp_path())


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
@pytest.mark.parametrize("split", ["bytes", "random", "at-every-ff"])
def test_jpeg_fed_in_pieces_gives_the_same_file(progressive, split):
    """As it streams in: any split of the upload (one byte at a time, at each 0xFF) gives the same output."""
    import random

    original = phone_jpeg(orientation=6, progressive=progressive, icc=True)
    whole = joined(scrub.scrub_jpeg(original))
    if split == "bytes":
        cuts = list(range(1, len(original)))
    elif split == "random":
        rng = random.Random(7)
        cuts = sorted(rng.sample(range(1, len(original)), 40))
    else:
        cuts = sorted({i for i, b in enumerate(original) if b == 0xFF} | {i + 1 for i, b in enumerate(original)
                                                                            if b == 0xFF and i + 1 < len(original)})
    scrubber = scrub.JpegScrubber()
    out = []
    for start, stop in zip([0, *cuts], [*cuts, len(original)]):
        out.extend(bytes(p) for p in scrubber.feed(original[start:stop]))
    out.extend(scrubber.finish())
    assert b"".join(out) == whole


def test_jpeg_cut_off_while_streaming_is_refused_at_the_end():
    original = phone_jpeg()
    scrubber = scrub.JpegScrubber()
    scrubber.feed(original[:len(original) // 2])
    with pytest.raises(scrub.Unreadable):
        scrubber.finish()
    with pytest.raises(scrub.Unreadable):
        scrub.JpegScrubber().feed(b"\x89PNG\r\n\x1a\n")


def test_clean_a_png_through_the_store(tmp_path):
    store = BlobStore(tmp_path / "blobs")
    source = tmp_path / "upload.png"
    source.write_bytes(phone_png(orientation=3))
    clean = store.clean(source, "image/png", store.temp_path())
    data = clean.path.read_bytes()
    assert data == joined(scrub.scrub_png(source.read_bytes())) and len(data) == clean.size
    assert b"PNG-YAMADA" not in data and pixels(data) == pixels(source.read_bytes())
    source.write_bytes(source.read_bytes()[:200])
    with pytest.raises(scrub.Unreadable):
        store.clean(source, "image/png", store.temp_path())


def test_jpeg_segments_kept_for_decoding_carry_nothing_else():
    """The Adobe segment is cut to its fixed 12 bytes; an ICC segment whose profile is not exactly
    a profile (extra bytes, bad signature) is dropped: neither can smuggle metadata through."""
    hidden = b"<x:xmpmeta>GPSLatitude 35.68 YAMADA-HIDDEN</x:xmpmeta>"
    adobe = segment(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x01" + hidden)
    fake_icc = segment(0xE2, b"ICC_PROFILE\x00\x01\x01" + struct.pack(">I", 200) + b"\x00" * 32 + b"acsp"
                       + b"\x00" * 160 + hidden)
    original = insert_after_soi(jpeg_bytes(), adobe, fake_icc)
    cleaned = joined(scrub.scrub_jpeg(original))
    assert b"YAMADA-HIDDEN" not in cleaned and b"GPSLatitude" not in cleaned
    assert b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x01" in cleaned  # the decoder's part stays
    assert b"ICC_PROFILE" not in cleaned
    assert pixels(cleaned) == pixels(original)


def test_pdf_with_an_embedded_phone_photo_loses_the_photo_exif():
    """A phone's "scan to PDF" embeds the JPEG as it is (DCTDecode), EXIF and GPS included."""
    from pypdf import PdfReader
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    photo = phone_jpeg()
    assert b"PhoneMaker" in photo
    out = io.BytesIO()
    pdf = canvas.Canvas(out)
    pdf.drawImage(ImageReader(io.BytesIO(photo)), 50, 50, width=97, height=61)
    pdf.showPage()
    pdf.save()
    original = out.getvalue()
    assert b"PhoneMaker" in original  # reportlab embedded the JPEG bytes unchanged
    cleaned = scrub.scrub_pdf(original)
    for marker in (b"PhoneMaker", b"Exif\x00\x00", b"COMMENT-YAMADA", b"IPTC-YAMADA"):
        assert marker not in cleaned, marker
    assert joined(scrub.scrub_jpeg(photo)) in cleaned  # the same photo, cleaned as an upload is
    assert len(PdfReader(io.BytesIO(cleaned)).pages[0].images) == 1
