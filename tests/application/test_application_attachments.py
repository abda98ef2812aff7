"""Uploads: limits, sniffed types, metadata stripping, content addressing, nothing left by a cut-off."""

from __future__ import annotations

import asyncio
import hashlib
import io

import grpc
import pytest
from onestop.application.v1 import application_pb2 as pb
from PIL import Image
from pypdf import PdfReader, PdfWriter

from server.application.blobs import BlobStore
from server.ids import new_id
from tests.application.support import (PDF_AUTHOR, PDF_CONTENT, jpeg_bytes, pdf_bytes, refused,
                                        upload_messages)

MIB = 1024 * 1024


async def stored(platform) -> tuple[int, list[str]]:
    """(attachment rows, files under blob_dir other than the temp folder's)."""
    async with platform.db.read() as tx:
        rows = await tx.scalar("SELECT COUNT(*) FROM application_attachments")
    root = platform.settings.blob_dir
    files = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()] if root.exists() else []
    return rows, sorted(files)


def blob_path(platform, attachment):
    return platform.settings.blob_dir / attachment.sha256[:2] / attachment.sha256[2:4] / attachment.sha256


async def test_photo_is_stored_without_exif_or_gps(platform, applicant):
    draft = await applicant.draft()
    original = jpeg_bytes(gps=True)
    with Image.open(io.BytesIO(original)) as check:  # the test photo really carries GPS
        assert check.getexif().get_ifd(0x8825)
    reply = await applicant.upload(draft.application_id, original, filename="IMG_0001.jpg")
    attachment = reply.attachment
    assert attachment.content_type == "image/jpeg" and attachment.slot == "health_insurance"
    assert reply.version == draft.version + 1
    path = platform.settings.blob_dir / attachment.sha256[:2] / attachment.sha256[2:4] / attachment.sha256
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == attachment.sha256 and len(data) == attachment.size
    assert b"Exif" not in data and b"PhoneMaker" not in data
    with Image.open(path) as image:
        exif = image.getexif()
        assert len(exif) == 0 and not exif.get_ifd(0x8825)
        assert "exif" not in image.info and "icc_profile" not in image.info
        assert image.size == (64, 48)
        assert max(abs(a - b) for a, b in zip(image.getpixel((10, 10)), (200, 30, 30))) < 8
    assert await stored(platform) == (1, [f"{attachment.sha256[:2]}/{attachment.sha256[2:4]}/{attachment.sha256}"])
    shown = await applicant.get(draft.application_id)
    assert [a.attachment_id for a in shown.attachments] == [attachment.attachment_id]
    assert shown.history[-1].action == "attachment_added"


async def test_too_large_is_refused_and_nothing_stored(platform, applicant):
    draft = await applicant.draft()
    big = b"\xff\xd8\xff\xe0" + b"\0" * (11 * MIB - 4)
    code, reason, fields = await refused(applicant.upload(draft.application_id, big, chunk=MIB))
    assert (code, reason, fields) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "ATTACHMENT_TOO_LARGE",
                                      ["metadata.declared_size"])
    # Lying about the size does not help: the stream is cut off at the limit.
    code, reason, fields = await refused(applicant.upload(draft.application_id, big, chunk=MIB,
                                                          declared_size=10 * MIB))
    assert (code, reason, fields) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "ATTACHMENT_TOO_LARGE", ["chunk"])
    code, reason, fields = await refused(applicant.upload(draft.application_id, big[:1000], declared_size=2000))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "SIZE_MISMATCH", ["metadata.declared_size"])
    assert await stored(platform) == (0, [])
    assert (await applicant.get(draft.application_id)).version == draft.version


async def test_application_total_is_limited(tmp_path, pki_template):
    from server.testing import run_platform
    from tests.application.support import make_applicant

    async with run_platform(tmp_path, pki_template=pki_template, application_max_bytes=3000) as platform:
        applicant = await make_applicant(platform)
        draft = await applicant.draft()
        await applicant.upload(draft.application_id, pdf_bytes(), content_type="application/pdf", slot="other")
        code, reason, fields = await refused(applicant.upload(
            draft.application_id, pdf_bytes() + b"%" * 3000, content_type="application/pdf", slot="other"))
        assert (code, reason, fields) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "APPLICATION_TOO_LARGE",
                                          ["metadata.declared_size"])
        assert (await stored(platform))[0] == 1


async def test_declared_type_must_match_the_content(platform, applicant):
    draft = await applicant.draft()
    code, reason, fields = await refused(applicant.upload(draft.application_id, pdf_bytes(),
                                                          content_type="image/jpeg"))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "CONTENT_TYPE_MISMATCH",
                                      ["metadata.declared_content_type"])
    code, reason, _ = await refused(applicant.upload(draft.application_id, b"GIF89a" + b"\0" * 100,
                                                     content_type="image/png"))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONTENT_TYPE_MISMATCH")
    code, reason, _ = await refused(applicant.upload(draft.application_id, b"\xff\xd8\xff" + b"garbage" * 50))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "IMAGE_UNREADABLE")
    code, reason, fields = await refused(applicant.upload(draft.application_id, jpeg_bytes(), slot="passport"))
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["metadata.slot"])
    assert await stored(platform) == (0, [])
    # A real PDF declared as one is stored (rewritten without metadata: see the PDF tests below).
    reply = await applicant.upload(draft.application_id, pdf_bytes(), content_type="application/pdf")
    assert reply.attachment.content_type == "application/pdf"
    with PdfReader(blob_path(platform, reply.attachment)) as stored_pdf:
        assert stored_pdf.pages[0].get_contents().get_data() == PDF_CONTENT


async def test_cut_off_upload_leaves_nothing(platform, applicant):
    draft = await applicant.draft()
    sent = asyncio.Event()

    async def requests():
        data = jpeg_bytes(size=(1200, 900))
        messages = list(upload_messages(draft.application_id, data + b"\0" * (3 * MIB), chunk=64 * 1024))
        for message in messages[:20]:
            yield message
        sent.set()
        await asyncio.Event().wait()  # the phone goes silent: the rest never comes

    call = applicant.stub.UploadAttachment(requests(), metadata=applicant.md)
    await asyncio.wait_for(sent.wait(), 10)
    temp_dir = platform.settings.blob_dir / "tmp"
    for _ in range(200):  # bounded: the server has the partial file open in tmp/
        if any(temp_dir.iterdir()):
            break
        await asyncio.sleep(0.01)
    assert any(temp_dir.iterdir())
    call.cancel()
    for _ in range(500):  # bounded wait for the server to notice the cancellation
        if not any(temp_dir.iterdir()):
            break
        await asyncio.sleep(0.01)
    assert not any(temp_dir.iterdir())
    assert await stored(platform) == (0, [])
    assert (await applicant.get(draft.application_id)).version == draft.version


async def test_retry_with_same_request_id_stores_once(platform, applicant):
    draft = await applicant.draft()
    photo = jpeg_bytes()
    first = await applicant.upload(draft.application_id, photo, request_id="upload-1")
    again = await applicant.upload(draft.application_id, photo, request_id="upload-1")
    assert again == first
    assert (await stored(platform))[0] == 1
    # Slot limits: health_insurance holds two files; a third is refused; removing frees one.
    await applicant.upload(draft.application_id, jpeg_bytes(color=(0, 0, 255)))
    code, reason, _ = await refused(applicant.upload(draft.application_id, jpeg_bytes(color=(0, 255, 0))))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SLOT_FULL")
    removed = await applicant.stub.RemoveAttachment(pb.RemoveAttachmentRequest(
        request_id=new_id("rq"), application_id=draft.application_id, attachment_id=first.attachment.attachment_id),
        metadata=applicant.md)
    assert removed.version > first.version
    # The photo goes with its row: never signed, nothing else names it.
    assert not BlobStore(platform.settings.blob_dir).path_for(first.attachment.sha256).exists()
    code, reason, _ = await refused(applicant.stub.RemoveAttachment(pb.RemoveAttachmentRequest(
        request_id=new_id("rq"), application_id=draft.application_id, attachment_id=first.attachment.attachment_id),
        metadata=applicant.md))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "ATTACHMENT_NOT_FOUND")


async def test_metadata_must_come_first(platform, applicant):
    draft = await applicant.draft()

    async def chunks_only():
        yield pb.UploadAttachmentRequest(chunk=b"\xff\xd8\xff")

    code, _, fields = await refused(applicant.stub.UploadAttachment(chunks_only(), metadata=applicant.md))
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["metadata"])
    code, _, _ = await refused(applicant.stub.UploadAttachment(
        upload_messages(draft.application_id, jpeg_bytes())))  # no token
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_heic_photo_is_stored_as_clean_jpeg(platform, applicant):
    pytest.importorskip("pillow_heif")
    image = Image.new("RGB", (64, 48), (20, 120, 220))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x8825] = {1: "N", 2: (35.0, 41.0, 22.0), 3: "E", 4: (139.0, 45.0, 10.0)}
    out = io.BytesIO()
    image.save(out, format="HEIF", exif=exif.tobytes())
    draft = await applicant.draft()
    reply = await applicant.upload(draft.application_id, out.getvalue(), content_type="image/heic",
                                   filename="IMG_0002.HEIC")
    assert reply.attachment.content_type == "image/jpeg"
    path = platform.settings.blob_dir / reply.attachment.sha256[:2] / reply.attachment.sha256[2:4] / reply.attachment.sha256
    with Image.open(path) as stored_image:
        assert stored_image.format == "JPEG" and len(stored_image.getexif()) == 0
    assert b"PhoneMaker" not in path.read_bytes()


async def test_download_returns_the_stored_bytes_to_owner_and_staff_only(platform, applicant, staff):
    from onestop.application.v1 import application_pb2_grpc as pb_grpc

    from tests.application.support import OTHER_LG, make_applicant

    application = await applicant.submitted()
    attachment = application.attachments[0]

    async def fetch(stub, metadata=()):
        parts = [m async for m in stub.DownloadAttachment(pb.DownloadAttachmentRequest(
            application_id=application.application_id, attachment_id=attachment.attachment_id), metadata=metadata)]
        return parts[0].attachment, b"".join(p.chunk for p in parts[1:])

    stored_path = (platform.settings.blob_dir / attachment.sha256[:2] / attachment.sha256[2:4] / attachment.sha256)
    for stub, md in ((applicant.stub, applicant.md), (staff, ())):
        meta, data = await fetch(stub, md)
        assert meta == attachment and data == stored_path.read_bytes()
    other = await make_applicant(platform, "鈴木 一郎")
    code, reason, _ = await refused(fetch(other.stub, other.md))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "APPLICATION_NOT_FOUND")
    await platform.add_municipality(OTHER_LG, "大阪市", "大阪府")
    code, reason, _ = await refused(fetch(pb_grpc.ApplicationServiceStub(platform.municipality(OTHER_LG))))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "OTHER_MUNICIPALITY")
    code, reason, _ = await refused(fetch(pb_grpc.ApplicationServiceStub(platform.channel())))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_concurrent_uploads_never_exceed_the_application_total(tmp_path, pki_template):
    from server.testing import run_platform
    from tests.application.support import make_applicant

    limit = 5000
    async with run_platform(tmp_path, pki_template=pki_template, application_max_bytes=limit) as platform:
        applicant = await make_applicant(platform)
        draft = await applicant.draft()
        files = [pdf_bytes(1200 + i) for i in range(5)]  # each fits, all five do not
        results = await asyncio.gather(*(applicant.upload(draft.application_id, data, slot="other",
                                                          content_type="application/pdf") for data in files),
                                       return_exceptions=True)
        ok = [r for r in results if isinstance(r, pb.UploadAttachmentResponse)]
        refusals = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(ok) + len(refusals) == 5 and ok and refusals
        assert all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refusals)
        async with platform.db.read() as tx:
            total = await tx.scalar("SELECT SUM(size) FROM application_attachments")
        assert total == sum(r.attachment.size for r in ok) <= limit
        assert len((await stored(platform))[1]) == len(ok)  # no orphan files from the refused ones


async def test_pdf_is_stored_without_info_or_xmp(platform, applicant):
    draft = await applicant.draft()
    original = pdf_bytes(500, metadata=True)
    with PdfReader(io.BytesIO(original)) as check:  # the test PDF really carries both kinds of metadata
        assert check.metadata.author == PDF_AUTHOR and check.xmp_metadata is not None
    reply = await applicant.upload(draft.application_id, original, content_type="application/pdf", slot="other",
                                   filename="scan.pdf")
    path = blob_path(platform, reply.attachment)
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == reply.attachment.sha256 and len(data) == reply.attachment.size
    for personal in (b"YAMADA", b"ScanApp", b"PhoneScanner", b"20261203", b"xmpmeta", b"/Metadata", b"/Author",
                     b"/Producer", b"/Creator", b"/Info"):
        assert personal not in data, personal
    with PdfReader(path) as stored_pdf:
        assert not stored_pdf.metadata and stored_pdf.xmp_metadata is None
        assert len(stored_pdf.pages) == 1
        assert stored_pdf.pages[0].get_contents().get_data().startswith(PDF_CONTENT)
        assert "/Metadata" not in stored_pdf.pages[0]
    assert (await stored(platform))[0] == 1


async def test_pdf_an_earlier_revision_does_not_survive(platform, applicant):
    """An incremental update that blanks the author still carries the old Info in its first revision."""
    first = pdf_bytes(metadata=True)
    writer = PdfWriter(io.BytesIO(first), incremental=True)
    writer.add_metadata({"/Author": "nobody"})
    updated = io.BytesIO()
    writer.write(updated)
    assert b"YAMADA" in updated.getvalue()
    draft = await applicant.draft()
    reply = await applicant.upload(draft.application_id, updated.getvalue(), content_type="application/pdf",
                                   slot="other")
    data = blob_path(platform, reply.attachment).read_bytes()
    assert b"YAMADA" not in data and b"nobody" not in data and b"xmpmeta" not in data


@pytest.mark.parametrize("body", [
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n",  # no xref, no pages
    b"%PDF-1.7\n" + b"\x00garbage" * 300,
    "truncated",
    "password",
], ids=["no-pages", "garbage", "truncated", "password"])
async def test_malformed_pdf_is_refused_and_nothing_stored(platform, applicant, body):
    if body == "truncated":
        body = pdf_bytes(metadata=True)[:300]
    elif body == "password":
        writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes())))
        writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
        out = io.BytesIO()
        writer.write(out)
        body = out.getvalue()
    draft = await applicant.draft()
    code, reason, fields = await refused(applicant.upload(draft.application_id, body, content_type="application/pdf",
                                                          slot="other"))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "PDF_UNREADABLE", ["chunk"])
    assert await stored(platform) == (0, [])
    assert not any((platform.settings.blob_dir / "tmp").iterdir())
    assert (await applicant.get(draft.application_id)).version == draft.version


async def test_pdf_locked_only_against_editing_is_stored_open_and_clean(platform, applicant):
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes(metadata=True))))
    writer.encrypt(user_password="", owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    draft = await applicant.draft()
    reply = await applicant.upload(draft.application_id, out.getvalue(), content_type="application/pdf",
                                   slot="other")
    with PdfReader(blob_path(platform, reply.attachment)) as stored_pdf:
        assert not stored_pdf.is_encrypted and not stored_pdf.metadata and stored_pdf.xmp_metadata is None
        assert stored_pdf.pages[0].get_contents().get_data().startswith(PDF_CONTENT)


async def test_a_jpeg_is_cleaned_as_it_streams_in_whatever_the_chunking(platform, applicant):
    from server.application.scrub import scrub_jpeg

    photo = jpeg_bytes(gps=True, size=(640, 480)) + b"TRAILER-AFTER-EOI"
    expected = b"".join(bytes(p) for p in scrub_jpeg(photo))
    draft = await applicant.draft()
    for chunk in (1000, 4093, 256 * 1024):
        reply = await applicant.upload(draft.application_id, photo, chunk=chunk, slot="other")
        data = blob_path(platform, reply.attachment).read_bytes()
        assert data == expected and reply.attachment.size == len(expected)
        assert reply.attachment.sha256 == hashlib.sha256(expected).hexdigest()
        assert b"PhoneMaker" not in data and b"TRAILER" not in data
        await applicant.stub.RemoveAttachment(pb.RemoveAttachmentRequest(
            request_id=new_id("rq"), application_id=draft.application_id,
            attachment_id=reply.attachment.attachment_id), metadata=applicant.md)


async def test_a_jpeg_cut_short_or_broken_mid_stream_is_refused_and_nothing_stored(platform, applicant):
    photo = jpeg_bytes(gps=True, size=(640, 480))
    draft = await applicant.draft()
    middle = len(photo) // 2
    broken = photo[:middle] + b"\xff\x02" + photo[middle + 2:]  # an impossible marker inside the image data
    for data in (photo[:len(photo) // 2], broken):
        code, reason, fields = await refused(applicant.upload(draft.application_id, data, chunk=1000))
        assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "IMAGE_UNREADABLE", ["chunk"])
    # The size checks of the whole stream still come first.
    code, reason, _ = await refused(applicant.upload(draft.application_id, broken, chunk=1000,
                                                     declared_size=len(broken) + 10))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SIZE_MISMATCH")
    assert await stored(platform) == (0, [])
    assert not any((platform.settings.blob_dir / "tmp").iterdir())


@pytest.fixture(scope="module")
def large_photo() -> bytes:
    """A GPS-tagged photo of a few MiB: enough for the early syncs to start while it streams in."""
    from mobile_stub.photos import jpeg_of_size

    return jpeg_of_size(5 * MIB)


async def test_the_answer_comes_only_after_the_whole_clean_file_is_synced(platform, applicant, large_photo,
                                                                          monkeypatch):
    import os
    import time

    from server.application import blobs

    temp_dir = str(platform.settings.blob_dir / "tmp")
    synced: list[tuple[int, float]] = []  # (bytes on disk when the final fsync returned, when)
    early: list[int] = []
    real_fsync, real_datasync = os.fsync, blobs._datasync

    def fsync(fd):
        real_fsync(fd)
        if os.readlink(f"/proc/self/fd/{fd}").startswith(temp_dir):
            synced.append((os.fstat(fd).st_size, time.perf_counter()))

    def datasync(fd):
        early.append(os.fstat(fd).st_size)
        real_datasync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(blobs, "_datasync", datasync)
    draft = await applicant.draft()
    reply = await applicant.upload(draft.application_id, large_photo)
    answered = time.perf_counter()
    assert reply.attachment.size > 4 * MIB
    # Early syncs ran while the photo streamed in; the final one covered every byte, before the answer.
    assert early and all(size < reply.attachment.size for size in early)
    assert [size for size, _ in synced] == [reply.attachment.size] and synced[0][1] < answered
    data = blob_path(platform, reply.attachment).read_bytes()
    assert hashlib.sha256(data).hexdigest() == reply.attachment.sha256 and b"GPS" not in data[:4096]


async def test_a_failed_early_sync_refuses_the_upload_and_leaves_nothing(platform, applicant, large_photo,
                                                                         monkeypatch):
    import errno

    from server.application import blobs

    def failing(fd):
        raise OSError(errno.EIO, "write-back failed")

    monkeypatch.setattr(blobs, "_datasync", failing)
    draft = await applicant.draft()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await applicant.upload(draft.application_id, large_photo)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert await stored(platform) == (0, [])
    assert not any((platform.settings.blob_dir / "tmp").iterdir())
    assert (await applicant.get(draft.application_id)).version == draft.version


async def test_the_same_bytes_twice_are_stored_once_and_nothing_is_left_in_tmp(platform, applicant):
    draft = await applicant.draft()
    photo = jpeg_bytes(gps=True, size=(320, 240))
    first = await applicant.upload(draft.application_id, photo)
    path = blob_path(platform, first.attachment)
    inode = path.stat().st_ino
    second = await applicant.upload(draft.application_id, photo, slot="other")
    assert first.attachment.sha256 == second.attachment.sha256
    assert first.attachment.attachment_id != second.attachment.attachment_id
    assert path.stat().st_ino == inode  # the stored file stayed; the second copy was discarded
    sha = first.attachment.sha256
    assert await stored(platform) == (2, [f"{sha[:2]}/{sha[2:4]}/{sha}"])
    assert not any((platform.settings.blob_dir / "tmp").iterdir())


async def test_an_upload_that_outlasts_its_time_is_refused_and_leaves_nothing(platform, applicant):
    """A stream may last settings.upload_max_seconds (the leftovers sweep only takes older files)."""
    assert platform.settings.upload_max_seconds < platform.settings.upload_leftover_age_seconds
    draft = await applicant.draft()
    photo = jpeg_bytes(gps=True, size=(640, 480))
    messages = list(upload_messages(draft.application_id, photo, chunk=len(photo) // 2 + 1))
    call = applicant.stub.UploadAttachment(metadata=applicant.md)
    await call.write(messages[0])
    await call.write(messages[1])
    tmp = BlobStore(platform.settings.blob_dir).tmp
    for _ in range(500):  # until the server has begun writing the file (bounded: 5 s)
        if any(tmp.iterdir()):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the first chunk never reached the disk")
    platform.clock.advance(seconds=platform.settings.upload_max_seconds + 1)  # the client stalls
    await call.write(messages[2])
    await call.done_writing()
    code, reason, _ = await refused(call)
    assert (code, reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "UPLOAD_TOO_SLOW")
    assert await stored(platform) == (0, [])
    assert list(BlobStore(platform.settings.blob_dir).tmp.iterdir()) == []
