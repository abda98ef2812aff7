"""What a killed server left in the blob folder is removed by the `upload_leftovers` sweep: stale
temporary files and attachment files no row names; never a stored attachment, an issued PDF, or
the files of an upload in progress."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from server.application.blobs import BlobStore
from server.testing import run_platform
from tests.application.support import jpeg_bytes, make_applicant

HOURS_AGO = time.time() - 2 * 3600


@pytest.fixture
async def manual(tmp_path, pki_template):
    async with run_platform(tmp_path, pki_template=pki_template, timers=False) as running:
        yield running


def _aged(path, data: bytes = b"x", when: float = HOURS_AGO):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (when, when))
    return path


async def test_stale_temporaries_and_unreferenced_blobs_go_and_nothing_else(manual):
    applicant = await make_applicant(manual)
    draft = await applicant.draft()
    stored = (await applicant.upload(draft.application_id, jpeg_bytes(gps=True))).attachment
    blobs = BlobStore(manual.settings.blob_dir)
    kept = blobs.path_for(stored.sha256)
    os.utime(kept, (HOURS_AGO, HOURS_AGO))  # old, but an attachment row names it

    raw_left = _aged(blobs.temp_path(), jpeg_bytes(gps=True))            # killed mid-upload
    orphan_data = jpeg_bytes(size=(8, 8))
    orphan = _aged(blobs.path_for(hashlib.sha256(orphan_data).hexdigest()), orphan_data)  # killed before commit
    in_progress = _aged(blobs.temp_path(), when=time.time())              # another upload, still arriving
    fresh_orphan = _aged(blobs.path_for("ab" * 32), when=time.time())     # its rename just happened
    issued_pdf = _aged(manual.settings.blob_dir / "cd" / f"{'cd' * 32}.pdf", b"%PDF-1.4")  # kiosk document

    timers = manual.server.platform.services["timers"]
    assert (await timers.run_due())["upload_leftovers"] == 2
    assert not raw_left.exists() and not orphan.exists()
    assert kept.exists() and in_progress.exists() and fresh_orphan.exists() and issued_pdf.exists()
    assert (await timers.run_due())["upload_leftovers"] == 0

    assert hashlib.sha256(kept.read_bytes()).hexdigest() == stored.sha256  # the attachment is whole


async def test_a_file_a_signed_submission_named_is_kept_for_audit(manual):
    applicant = await make_applicant(manual)
    submitted = await applicant.submitted()
    sha256 = submitted.attachments[0].sha256
    async with manual.db.write() as tx:  # as when a correction replaces the photo
        await tx.execute("DELETE FROM application_attachments WHERE sha256 = ?", (sha256,))
    signed = BlobStore(manual.settings.blob_dir).path_for(sha256)
    os.utime(signed, (HOURS_AGO, HOURS_AGO))
    assert (await manual.server.platform.services["timers"].run_due())["upload_leftovers"] == 0
    assert signed.exists()


async def test_the_age_is_a_setting(tmp_path, pki_template):
    async with run_platform(tmp_path, pki_template=pki_template, timers=False,
                            upload_leftover_age_seconds=0) as running:
        blobs = BlobStore(running.settings.blob_dir)
        left = _aged(blobs.temp_path(), when=time.time() - 1)
        assert (await running.server.platform.services["timers"].run_due())["upload_leftovers"] == 1
        assert not left.exists()
