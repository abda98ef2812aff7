"""PDF worker processes: certificates are rendered and stored on the machine's other cores, so the
event loop's thread does no rendering.

Each worker is a process started with "spawn" (never forked from a process running gRPC's threads)
and joined to the server by one socket pair. A request is a length-prefixed pickle of the contents
to render; the worker answers each request in order with the PDFs and their sha256 (stored in the
blob store by the worker) and the CPU seconds rendering took.

Why not ProcessPoolExecutor (used before): every render crossed three threads of the server process
(its manager thread, the call queue's feeder thread, a wake-up pipe) and the loop's self-pipe; each
hop had to take the GIL from the busy event loop. Measured with the kiosk benchmark, those hops cost
more of the server's CPU than the round trip over one socket that the loop itself reads and writes.

A worker that dies (killed, crashed) is noticed by end of file on its socket: what it had pending
fails with `WorkerLost` and rendering goes on inline until a kiosk connecting after a pause (which
doubles with each breakage: RESTART_AFTER_S, up to RESTART_AFTER_MAX_S) starts new workers. A worker
exits when its server is gone (end of file on its side: the server closed it, or died).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import pickle
import signal
import socket
import struct
import time
from collections import deque
from pathlib import Path

from server.issuance.pdf import STATS, BlobStore, CertificateContent, _render, ensure_font, render

log = logging.getLogger("onestop.issuance.pdf")
_LENGTH = struct.Struct("!I")


class WorkerLost(Exception):
    """The worker process ended before answering."""


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = sock.recv(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def serve(sock: socket.socket, blob_dir: str) -> None:
    """A worker process's life: answer requests on `sock` until the server closes it (or dies)."""
    # Ctrl-C reaches the whole process group: the server decides when to stop, and its closing the
    # socket (or dying) ends the worker, quietly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ensure_font()
    blobs = BlobStore(Path(blob_dir))
    with sock:
        while True:
            try:
                header = _read_exactly(sock, _LENGTH.size)
                body = header and _read_exactly(sock, _LENGTH.unpack(header)[0])
            except ConnectionResetError:
                return
            if not body:
                return
            contents: list[CertificateContent] = pickle.loads(body)
            try:
                started = time.thread_time()
                pdfs = [_render(content) for content in contents]
                seconds = time.thread_time() - started
                answer = (True, ([(data, blobs.put(data)) for data in pdfs], seconds))
            except Exception as error:  # the server raises it for the step that asked
                answer = (False, error)
            data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
            try:
                sock.sendall(_LENGTH.pack(len(data)) + data)
            except (BrokenPipeError, ConnectionResetError):  # the server is gone: so is its worker
                return


class _Worker:
    """The server's end of one worker process: requests go out on the socket, answers are matched
    to them in order by a reader task."""

    def __init__(self, blob_dir: str) -> None:
        ours, theirs = socket.socketpair()
        self.process = multiprocessing.get_context("spawn").Process(
            target=serve, args=(theirs, blob_dir), name="pdf-worker", daemon=True)
        self.process.start()
        theirs.close()
        self._sock = ours
        self._pending: deque[asyncio.Future] = deque()
        self._writer: asyncio.StreamWriter | None = None
        self._opening: asyncio.Task | None = None  # one stream over the socket, whoever asks first
        self._reader_task: asyncio.Task | None = None
        self.alive = True

    @property
    def load(self) -> int:
        return len(self._pending)

    async def render(self, contents: list[CertificateContent]) -> tuple[list[tuple[bytes, str]], float]:
        if self._writer is None:
            if self._opening is None:
                self._opening = asyncio.get_running_loop().create_task(self._open())
            await self._opening
        if not self.alive:
            raise WorkerLost("the PDF worker process has ended")
        future = asyncio.get_running_loop().create_future()
        data = pickle.dumps(contents, protocol=pickle.HIGHEST_PROTOCOL)
        self._pending.append(future)
        self._writer.write(_LENGTH.pack(len(data)) + data)
        ok, answer = await future
        if not ok:
            raise answer
        return answer

    async def _open(self) -> None:
        reader, self._writer = await asyncio.open_connection(sock=self._sock)
        self._reader_task = asyncio.get_running_loop().create_task(self._read_answers(reader))

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                length = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))[0]
                answer = pickle.loads(await reader.readexactly(length))
                future = self._pending.popleft()
                if not future.done():  # a caller that went away: its PDFs are stored, unused
                    future.set_result(answer)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.alive = False
            while self._pending:
                future = self._pending.popleft()
                if not future.done():
                    future.set_exception(WorkerLost("the PDF worker process ended"))

    def close(self) -> None:
        self.alive = False
        if self._opening is not None:
            self._opening.cancel()
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._writer is not None:
            self._writer.close()
        else:
            self._sock.close()
        self.process.join(timeout=2)  # it exits on end of file
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=2)


class Renderer:
    """Renders certificates and stores them, in `workers` worker processes or, with 0, inline.

    `start()` (the kiosk desk calls it when a kiosk connects) starts the workers, so they have
    warmed up (imports, font) by the time the first payment comes; later calls restart lost workers
    once their pause has passed."""

    RESTART_AFTER_S = 5.0
    RESTART_AFTER_MAX_S = 300.0

    def __init__(self, blobs: BlobStore, workers: int) -> None:
        self.blobs = blobs
        self.workers = workers
        self._running: list[_Worker] = []
        self._started = False
        self._restart_at: float | None = None
        self._pause = self.RESTART_AFTER_S
        self.restarts = 0

    def start(self) -> None:
        """Start the worker processes once; later calls notice lost ones and restart them once their
        pause has passed."""
        if self._running and not all(w.alive for w in self._running):
            self._lost()
        if self.workers > 0 and not self._started:
            self._started = True
            self._spawn()
        elif not self._running and self._restart_at is not None and time.monotonic() >= self._restart_at:
            self._restart_at = None
            self.restarts += 1
            log.info("PDF worker processes restarted", extra={"restarts": self.restarts})
            self._spawn()

    def _spawn(self) -> None:
        self._running = [_Worker(str(self.blobs.root)) for _ in range(self.workers)]

    @property
    def offloaded(self) -> bool:
        return bool(self._running) and all(w.alive for w in self._running)

    @property
    def processes(self) -> list[multiprocessing.Process]:
        return [w.process for w in self._running]

    async def render_and_store(self, contents: list[CertificateContent]) -> list[tuple[bytes, str]]:
        """[(pdf, sha256)] for each content, each stored in the blob store."""
        if self.offloaded:
            try:
                copies, seconds = await min(self._running, key=lambda w: w.load).render(contents)
            except WorkerLost:
                self._lost()
            else:
                for _ in contents:
                    STATS.add(seconds / len(contents))
                return copies
        copies = []
        for content in contents:
            data = render(content)
            copies.append((data, self.blobs.put(data)))
        return copies

    def _lost(self) -> None:
        if not self._running:
            return
        log.warning("PDF worker process lost; rendering inline for now", extra={"restart_in_s": self._pause})
        self.close()
        self._restart_at = time.monotonic() + self._pause
        self._pause = min(self._pause * 2, self.RESTART_AFTER_MAX_S)

    def close(self) -> None:
        for worker in self._running:
            worker.close()
        self._running = []
