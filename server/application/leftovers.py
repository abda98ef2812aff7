"""What a server killed mid-upload leaves behind, found and removed.

Inside a running process an upload that fails or is cut off removes its own files
(`service.UploadAttachment`). A process that dies cannot: it may leave
- temporary files under `<blob_dir>/tmp/` (a raw one still holds the photo's metadata), and
- a cleaned file at its content address that no attachment row names (killed between the rename
  and the commit of the row).

`sweep` removes both once they are older than `age_seconds` (settings.upload_leftover_age_seconds):
an upload in progress writes its temporary file as chunks arrive and renames it inside the
transaction that stores the row, so nothing that old belongs to a live upload, whichever of the
processes sharing the folder runs it. A blob is removed only after the database, under the write
lock (no upload can commit a reference meanwhile), says neither an attachment nor a signed
submission's evidence names it. Issued certificate PDFs
(`<sha[:2]>/<sha>.pdf`, server.issuance.pdf) are not attachments and are never looked at.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

from server.application import store
from server.application.blobs import BlobStore
from server.db import Database

_ATTACHMENT_NAME = re.compile(r"[0-9a-f]{64}")
# Candidates checked against the database per statement.
_CHUNK = 500


def _older_than(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:  # removed meanwhile (by its own upload, or another process's sweep)
        return False


def _stale_files(blobs: BlobStore, cutoff: float) -> tuple[list[Path], list[Path]]:
    """(temporary files, attachment blobs) last written before `cutoff`. Blocking: a directory walk."""
    temps = [path for path in blobs.tmp.glob("up-*") if _older_than(path, cutoff)]
    stored = []
    for folder, _, names in os.walk(blobs.root):
        depth = len(Path(folder).relative_to(blobs.root).parts)
        if depth != 2:  # attachments live at <sha[:2]>/<sha[2:4]>/<sha>
            continue
        for name in names:
            path = Path(folder, name)
            if _ATTACHMENT_NAME.fullmatch(name) and blobs.path_for(name) == path and _older_than(path, cutoff):
                stored.append(path)
    return temps, stored


async def sweep(db: Database, blobs: BlobStore, age_seconds: float) -> int:
    """Remove leftover temporary files and unreferenced attachment blobs; returns how many."""
    temps, stored = await asyncio.to_thread(_stale_files, blobs, time.time() - age_seconds)
    removed = 0
    for path in temps:
        path.unlink(missing_ok=True)
        removed += 1
    # A cheap read first: most old blobs are referenced, and only the rest need the write lock.
    unreferenced: list[Path] = []
    async with db.read() as tx:
        for start in range(0, len(stored), _CHUNK):
            chunk = stored[start:start + _CHUNK]
            named = await store.referenced_blobs(tx, [path.name for path in chunk])
            unreferenced += [path for path in chunk if path.name not in named]
    if unreferenced:
        async with db.write() as tx:
            for path in unreferenced:
                if not await store.blob_referenced(tx, path.name):
                    blobs.remove(path.name)
                    removed += 1
    return removed
