"""Attachment files: type sniffing, metadata stripping, content-addressed storage beside the database.

An upload streams into `IncomingFile` under `<blob_dir>/tmp/`: a JPEG is cleaned on the way in
(metadata removed without re-encoding, see `scrub`) and hashed as it is written, on worker threads
while the rest arrives; PNG, PDF and HEIC land in a raw temporary file that `clean()` turns into a
cleaned one. Either way the cleaned file is hashed and synced before any database transaction
starts; inside the transaction only `adopt()` renames it to `<blob_dir>/<aa>/<bb>/<sha256>` (atomic
on one file system), or keeps the file already there with the same bytes. Whatever goes wrong
before that, the temporary files are removed, so a cut-off upload leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import mmap
import os
import secrets
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from server.application import scrub

try:  # HEIC (iPhone photos) only when the optional decoder is installed.
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIC_SUPPORTED = True
except ImportError:  # pragma: no cover - depends on the environment
    HEIC_SUPPORTED = False

JPEG, PNG, PDF, HEIC = "image/jpeg", "image/png", "application/pdf", "image/heic"
IMAGE_TYPES = (JPEG, PNG, HEIC)
# Decompression-bomb guard: a photo of a document needs no more than this.
Image.MAX_IMAGE_PIXELS = 60_000_000


def sniff(head: bytes) -> str | None:
    """The content type from the first bytes, or None if it is none of the accepted kinds."""
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"%PDF-"):
        return PDF
    if len(head) >= 12 and head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"heim",
                                                                    b"heis", b"hevc", b"hevx"):
        return HEIC
    return None


class ImageUnreadable(scrub.Unreadable):
    pass


def clean_image(source: Path, content_type: str) -> tuple[bytes, str]:
    """Re-encode an image so that nothing but its pixels survives (no EXIF, GPS, XMP, ICC, text).

    Used for HEIC, which is stored as JPEG (JPEG and PNG are cleaned losslessly by `scrub`). The
    EXIF orientation is applied to the pixels first, so the photo still shows upright. Returns
    (bytes, stored content type).
    """
    try:
        with Image.open(source) as image:
            image.load()
            upright = ImageOps.exif_transpose(image)
            if content_type == PNG:
                mode = "RGBA" if upright.mode in ("RGBA", "LA", "P") else "RGB"
                pixels = Image.frombytes(mode, upright.size, upright.convert(mode).tobytes())
                out = io.BytesIO()
                pixels.save(out, format="PNG", optimize=False)
                return out.getvalue(), PNG
            pixels = Image.frombytes("RGB", upright.size, upright.convert("RGB").tobytes())
            out = io.BytesIO()
            pixels.save(out, format="JPEG", quality=90)
            return out.getvalue(), JPEG
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ImageUnreadable(str(exc)) from None


@dataclass(frozen=True)
class CleanFile:
    """A cleaned upload in a temporary file, hashed and synced, not yet at its content address."""

    path: Path
    sha256: str
    size: int
    content_type: str


def _scrubbed(source: Path, content_type: str) -> tuple[list[scrub.Piece], str, object]:
    """(pieces of the cleaned file, stored content type, what to close afterwards)."""
    if content_type == HEIC:
        data, stored_type = clean_image(source, content_type)
        return [data], stored_type, None
    with open(source, "rb") as f:
        if content_type == PDF:
            return [scrub.scrub_pdf(f.read())], PDF, None
        if os.fstat(f.fileno()).st_size == 0:
            raise scrub.Unreadable("the file is empty")
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        pieces = scrub.scrub_jpeg(mapped) if content_type == JPEG else scrub.scrub_png(mapped)
    except scrub.Unreadable as exc:
        message = str(exc)
    except Exception as exc:  # noqa: BLE001 - a parser slip on hostile input is a refusal, not an INTERNAL
        message = f"the image does not parse ({type(exc).__name__})"
    else:
        return pieces, content_type, mapped
    # Out of the except blocks: the traceback (and its views into the mapping) is gone.
    mapped.close()
    raise scrub.Unreadable(message)


# Every this many bytes of a clean file, an fdatasync starts on a thread of its own (one at a time per
# upload), so that the disk and its cache flush keep pace with the network and the fsync before the
# answer has little left to do. Measured on the benchmark's disk: ten 8 MiB photos synced only at the
# end waited ~100 ms for it after their last byte had arrived; with this, ~6 ms.
SYNC_EVERY_BYTES = 2 * 1024 * 1024
# Threads of their own, so that none waits behind another kind nor behind other areas' work on the
# loop's default executor: writers clean, hash and write chunks (CPU, short); early syncs wait on the
# disk and on nothing else; final syncs (all at once: the file system commits concurrent syncs
# together) and removals may wait for an upload's early sync or writer, never the other way round.
_WRITERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="blob-write")
_EARLY_SYNCS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="blob-early-sync")
_SYNCS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="blob-sync")
_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


class IncomingFile:
    """An upload as it streams in.

    A JPEG (declared and sniffed so from its first bytes) is cleaned on the way in: the scrubber's
    pieces go straight into the clean temporary file and the hash, so the photo is written once and
    read never. Anything else lands in a raw temporary file and is cleaned by `BlobStore.clean` at the
    end. A filter error while streaming is kept and raised by `finish()`, so that the size checks of
    the rest of the stream come first, as for the other kinds. `discard()` removes both files.

    Each chunk is cleaned, hashed and written on a worker thread while the event loop receives the
    next one (hashing and writing run without the GIL): at most one chunk per upload is in flight,
    so memory stays bounded, and `write()` waits for the previous chunk before handing over the next.
    """

    def __init__(self, store: "BlobStore", declared: str) -> None:
        self._store = store
        self._declared = declared
        self.raw_path, self.clean_path = store.temp_path(), store.temp_path()
        self.head = b""
        self._out = None
        self._scrubber: scrub.JpegScrubber | None = None
        self._digest = hashlib.sha256()
        self._size = 0
        self._synced = 0  # bytes covered by the last early sync started
        self._sync: Future | None = None
        self._error: str | None = None
        # Held by the thread writing a chunk: discard() takes it, so the file is never closed under it.
        self._lock = threading.Lock()
        self._job: asyncio.Future | None = None
        self._failure: Exception | None = None  # the worker thread's I/O error, raised on the loop

    async def write(self, chunk: bytes) -> None:
        """Hand `chunk` over to be written, once the previous chunk is (raises its I/O error, if any)."""
        await self._settle()
        if self._out is None:  # the first chunk decides the way
            if self._declared == JPEG and sniff(chunk[:16]) == JPEG:
                self._scrubber = scrub.JpegScrubber()
                self._out = open(self.clean_path, "wb")
            else:
                self._out = open(self.raw_path, "wb")
        if len(self.head) < 16:
            self.head += chunk[:16]
        self._job = asyncio.get_running_loop().run_in_executor(_WRITERS, self._write_now, chunk)

    async def _settle(self) -> None:
        if self._job is not None:
            # Cancelled with the call: the thread still finishes its chunk, and discard() waits for it.
            await self._job
            self._job = None
        if self._failure is not None:
            raise self._failure

    def _write_now(self, chunk: bytes) -> None:
        """On a worker thread: clean, hash and write one chunk. Never raises (see _error, _failure)."""
        with self._lock:
            if self._out.closed:  # discarded before this thread got to it
                return
            try:
                if self._scrubber is None:
                    self._out.write(chunk)
                elif self._error is None:
                    try:
                        pieces = self._scrubber.feed(chunk)
                    except scrub.Unreadable as exc:
                        self._error = str(exc)
                        return
                    except Exception as exc:  # noqa: BLE001 - a parser slip on hostile input is a refusal
                        self._error = f"the image does not parse ({type(exc).__name__})"
                        return
                    self._put(pieces)
                    self._sync_early()
            except Exception as exc:  # noqa: BLE001 - raised on the loop by the next write() or finish()
                self._failure = exc

    def _put(self, pieces: list[scrub.Piece]) -> None:
        for piece in pieces:
            self._out.write(piece)
            self._digest.update(piece)
            self._size += len(piece)

    def _sync_early(self) -> None:
        """Start an fdatasync of what is written so far, unless one is still running; never waits.

        Only a head start: the final fsync in finish() still covers every byte. It runs on a duplicate
        descriptor (closed by the sync itself), so discard() can close the file meanwhile; its error is
        raised by the next chunk or by finish(), as the kernel may report a failed write-back only once.
        """
        if self._size - self._synced < SYNC_EVERY_BYTES or (self._sync is not None and not self._sync.done()):
            return
        if self._sync is not None:
            self._sync.result()
        self._out.flush()
        self._sync = _EARLY_SYNCS.submit(_datasync_and_close, os.dup(self._out.fileno()))
        self._synced = self._size

    async def finish(self, content_type: str) -> CleanFile:
        """The cleaned file (synced), for the sniffed `content_type`; raises scrub.Unreadable."""
        await self._settle()
        if self._out is None:
            raise scrub.Unreadable("the file is empty")
        if self._scrubber is None:
            self._out.close()
            return await asyncio.to_thread(self._store.clean, self.raw_path, content_type, self.clean_path)
        if self._error is None:
            try:
                self._put(self._scrubber.finish())
            except scrub.Unreadable as exc:
                self._error = str(exc)
        if self._error is not None:
            raise scrub.Unreadable(self._error)
        await asyncio.get_running_loop().run_in_executor(_SYNCS, self._sync_all)
        return CleanFile(self.clean_path, self._digest.hexdigest(), self._size, JPEG)

    def _sync_all(self) -> None:
        with self._lock:
            try:
                if self._sync is not None:
                    self._sync.result()
            finally:
                _sync_and_close(self._out)

    async def discard(self) -> None:
        """Remove both temporary files. On a thread: unlinking a photo waits ~5 ms on the file system,
        which would stall every call on the loop; there the thread also waits for a chunk still being
        written (see _lock)."""
        await asyncio.get_running_loop().run_in_executor(_SYNCS, self._remove)

    def _remove(self) -> None:
        with self._lock:
            if self._out is not None and not self._out.closed:
                self._out.close()
        self.raw_path.unlink(missing_ok=True)
        self.clean_path.unlink(missing_ok=True)


def _datasync_and_close(fd: int) -> None:
    try:
        _datasync(fd)
    finally:
        os.close(fd)


def _sync_and_close(out) -> None:
    try:
        out.flush()
        os.fsync(out.fileno())
    finally:
        out.close()


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    size: int
    content_type: str
    path: Path


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def temp_path(self) -> Path:
        return self.tmp / f"up-{secrets.token_hex(12)}"

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def clean(self, source: Path, content_type: str, dest: Path) -> CleanFile:
        """Write `source` without its metadata to `dest` (a temp path), hashed and synced.

        Blocking: run it in a thread. Raises scrub.Unreadable (ImageUnreadable for HEIC) for a file
        that does not parse; `dest` may then exist and is the caller's to remove."""
        pieces, stored_type, mapped = _scrubbed(source, content_type)
        try:
            digest = hashlib.sha256()
            size = 0
            with open(dest, "wb") as out:
                for piece in pieces:
                    out.write(piece)
                    digest.update(piece)
                    size += len(piece)
                out.flush()
                os.fsync(out.fileno())
        finally:
            for piece in pieces:
                if isinstance(piece, memoryview):
                    piece.release()
            del pieces
            if mapped is not None:
                mapped.close()
        return CleanFile(dest, digest.hexdigest(), size, stored_type)

    def adopt(self, clean: CleanFile) -> StoredBlob:
        """Move a cleaned temporary file to its content address (a rename: cheap, atomic).

        If those bytes are stored already, the stored file stays (the same hash: the same bytes, synced
        before they were adopted) and the temporary one is the caller's to discard: replacing it would
        unlink the old file here, inside the write transaction on the event loop (~5 ms for a photo).
        Adoptions and orphan removals both run in write transactions, so the file cannot go meanwhile."""
        final = self.path_for(clean.sha256)
        if not final.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(clean.path, final)
        return StoredBlob(clean.sha256, clean.size, clean.content_type, final)

    def remove(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)

    def read(self, sha256: str) -> bytes:
        return self.path_for(sha256).read_bytes()
