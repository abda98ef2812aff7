"""Ten concurrent 8 MiB photo uploads through the gateway, beside a bare Starlette discard handler.

Three processes: the gRPC server (`python -m server serve`), the gateway (`python -m gateway`,
uvicorn on uvloop) and the baseline (`python -m bench.gateway baseline PORT`: Starlette reading the
body and dropping it, same uvicorn settings). The harness (this process) signs a resident in through the
gateway with a software card, makes ten drafts, then posts ten multipart uploads of the same 8 MiB
GPS-tagged JPEG at once over real sockets, to the gateway and then to the baseline.

Figures: throughput in MB/s of request bytes (10^6 bytes per second, wall time of the ten), and
each process's peak resident memory (VmHWM from /proc). The gateway's upload is end to end: the
server also sniffs, strips EXIF/GPS (losslessly, by segment) and stores each photo before the gateway replies.
A gateway that buffered whole files would show ~80 MiB more peak memory than the baseline.

Each subject (through the gateway, the bare discard, straight over gRPC) runs ROUNDS interleaved rounds
of ten; throughput is over the summed wall time, and the CPU each process spent per MB is reported
beside it (robust to other load on the shared machine).

`python -m bench.gateway` prints the rows (`python -m bench.gateway baseline PORT` serves the baseline).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from datetime import datetime, timezone
from pathlib import Path

import httpx
import uvloop

from bench.common import Row

# Kept light at import: `python -m bench.gateway baseline PORT` runs the bare handler from this module,
# and what it imports counts in the baseline's memory. The harness imports the rest in measure().
REPO = Path(__file__).resolve().parent.parent

UPLOADS = 10
ROUNDS = 5
PHOTO_BYTES = 8 * 1024 * 1024
READY_TIMEOUT_S = 30.0
UPLOAD_TIMEOUT_S = 300.0


def baseline_app():
    """The baseline: a bare Starlette handler that reads the request body and discards it."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def discard(request: Request) -> Response:
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
        return JSONResponse({"received": received}, status_code=201)

    async def ready(request: Request) -> Response:
        return JSONResponse({})

    return Starlette(routes=[Route("/upload", discard, methods=["POST"]), Route("/openapi.json", ready)])


def serve_baseline(port: int) -> None:
    """Same uvicorn settings as `python -m gateway`."""
    import uvicorn

    uvicorn.run(baseline_app(), host="127.0.0.1", port=port, loop="uvloop", http="h11", log_level="warning",
                access_log=False)


async def serve_grpc_discard(port: int, pki: Path) -> None:
    """A bare grpc.aio server (uvloop, the same TLS certificate as ours) whose one client-streaming
    method parses the same UploadAttachmentRequest messages and drops them: the floor under the
    server's own upload path (no auth, no files, no database)."""
    import grpc
    from grpc import aio
    from onestop.application.v1 import application_pb2 as pb

    async def discard(requests, context):
        received = 0
        async for message in requests:
            received += len(message.chunk)
        return pb.UploadAttachmentResponse(version=received)

    server = aio.server(options=[("grpc.max_receive_message_length", 4 * 1024 * 1024)])
    handler = grpc.stream_unary_rpc_method_handler(discard, request_deserializer=pb.UploadAttachmentRequest.FromString,
                                                   response_serializer=pb.UploadAttachmentResponse.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Discard", {"Upload": handler}),))
    credentials = grpc.ssl_server_credentials([((pki / "server.key").read_bytes(), (pki / "server.pem").read_bytes())])
    server.add_secure_port(f"127.0.0.1:{port}", credentials)
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


async def _grpc_discard_ten_at_once(port: int, pki_dir: Path, photo: bytes, chunk: int = 256 * 1024) -> float:
    """The same messages as `_grpc_ten_at_once`, to the bare discard server: MB/s of file bytes."""
    import grpc
    from onestop.application.v1 import application_pb2 as pb

    credentials = grpc.ssl_channel_credentials((pki_dir / "ca.pem").read_bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        upload = channel.stream_unary("/bench.Discard/Upload",
                                      request_serializer=pb.UploadAttachmentRequest.SerializeToString,
                                      response_deserializer=pb.UploadAttachmentResponse.FromString)

        async def one(index: int) -> None:
            async def messages():
                yield pb.UploadAttachmentRequest(metadata=pb.UploadAttachmentMetadata(
                    request_id=f"bench-discard-{index}", application_id="app", slot="health_insurance",
                    declared_content_type="image/jpeg", declared_size=len(photo), filename="photo.jpg"))
                for start in range(0, len(photo), chunk):
                    yield pb.UploadAttachmentRequest(chunk=photo[start:start + chunk])

            reply = await upload(messages(), timeout=UPLOAD_TIMEOUT_S)
            assert reply.version == len(photo)

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(UPLOADS)))
        seconds = time.perf_counter() - started
    return len(photo) * UPLOADS / seconds / 1e6


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _prepare(data: Path):
    from clients.pki import DevPki, SoftwareCard
    from server.bootstrap import enrol_resident
    from server.db import Database
    from server.testing import PASSWORD, PIN, holder

    now = datetime.now(timezone.utc)
    pki = DevPki.ensure(data / "pki", now=now)
    card = SoftwareCard.load(pki.issue_card(holder(), PIN, PASSWORD, "bench-gateway", now=now))
    db = await Database(data / "onestop.db").open()
    await enrol_resident(db, holder(), card, "131016", now=now)
    await db.close()
    return card


async def _wait_http(base_url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient(base_url=base_url) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{base_url} exited with {process.returncode}")
            try:
                if (await client.get("/openapi.json")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{base_url} did not become ready")


def _multipart(photo: bytes) -> tuple[bytes, str]:
    boundary = "benchboundary7d1c"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"slot\"\r\n\r\nhealth_insurance\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"size\"\r\n\r\n{len(photo)}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"photo.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode()
    return head + photo + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def _grpc_ten_at_once(server, pki_dir: Path, token: str, application_ids: list[str], photo: bytes,
                            tag: str, chunk: int = 256 * 1024) -> float:
    """The same uploads straight to the server's UploadAttachment (no gateway): MB/s of file bytes."""
    import grpc
    from onestop.application.v1 import application_pb2 as pb
    from onestop.application.v1 import application_pb2_grpc as pb_grpc

    credentials = grpc.ssl_channel_credentials((pki_dir / "ca.pem").read_bytes())
    async with grpc.aio.secure_channel(server.target(), credentials) as channel:
        stub = pb_grpc.ApplicationServiceStub(channel)

        async def one(index: int, application_id: str) -> None:
            async def messages():
                yield pb.UploadAttachmentRequest(metadata=pb.UploadAttachmentMetadata(
                    request_id=f"bench-grpc-{tag}-{index}", application_id=application_id, slot="health_insurance",
                    declared_content_type="image/jpeg", declared_size=len(photo), filename="photo.jpg"))
                for start in range(0, len(photo), chunk):
                    yield pb.UploadAttachmentRequest(chunk=photo[start:start + chunk])

            await stub.UploadAttachment(messages(), metadata=(("authorization", f"Bearer {token}"),),
                                        timeout=UPLOAD_TIMEOUT_S)

        started = time.perf_counter()
        await asyncio.gather(*(one(i, a) for i, a in enumerate(application_ids)))
        seconds = time.perf_counter() - started
    return len(photo) * len(application_ids) / seconds / 1e6


async def _ten_at_once(base_url: str, paths: list[str], body: bytes, content_type: str,
                       headers: dict[str, str]) -> float:
    """Post `body` to each path at once; returns MB/s over the wall time of all of them."""
    limits = httpx.Limits(max_connections=len(paths))
    async with httpx.AsyncClient(base_url=base_url, timeout=UPLOAD_TIMEOUT_S, limits=limits) as client:
        async def one(path: str) -> None:
            reply = await client.post(path, content=body, headers={**headers, "content-type": content_type})
            if reply.status_code != 201:
                raise RuntimeError(f"upload to {path}: HTTP {reply.status_code} {reply.text[:300]}")

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(one(p) for p in paths)), UPLOAD_TIMEOUT_S)
        seconds = time.perf_counter() - started
    return len(body) * len(paths) / seconds / 1e6


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env={**os.environ, **env,
                                                                    "PYTHONPATH": f"{REPO / 'gen'}:{REPO}"})


class _Tally:
    """Seconds and bytes over the rounds of one subject, with the CPU its processes spent meanwhile."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.seconds = 0.0
        self.megabytes = 0.0
        self.cpu = {name: 0.0 for name in pids}

    async def round(self, megabytes: float, upload: Awaitable[float]) -> None:
        from bench.harness import cpu_seconds

        before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        rate = await upload
        for name, pid in self.pids.items():
            self.cpu[name] += cpu_seconds(pid) - before[name]
        self.seconds += megabytes / rate
        self.megabytes += megabytes

    @property
    def rate(self) -> float:
        return self.megabytes / self.seconds

    def cpu_ms_per_mb(self, name: str) -> float:
        return self.cpu[name] / self.megabytes * 1000


async def measure() -> list[Row]:
    from mobile_stub.app import MobileApp, child_allowance_form
    from mobile_stub.photos import jpeg_of_size
    from server.procs import free_port, spawn_server
    from server.testing import PASSWORD, PIN

    photo = jpeg_of_size(PHOTO_BYTES)
    body, content_type = _multipart(photo)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        card = await _prepare(data)
        server = await spawn_server(data)
        gateway_port, baseline_port = free_port(), free_port()
        gateway = _spawn(["-m", "gateway"], {
            "ONESTOP_DATA_DIR": str(data), "ONESTOP_GRPC_PORT": str(server.port),
            "ONESTOP_GRPC_MTLS_PORT": str(server.mtls_port), "ONESTOP_HTTP_PORT": str(gateway_port),
            "ONESTOP_LOG_LEVEL": "WARNING"})
        baseline = _spawn(["-m", "bench.gateway", "baseline", str(baseline_port)], {})
        discard_port = free_port()
        discard = subprocess.Popen([sys.executable, "-m", "bench.gateway", "grpc-discard", str(discard_port),
                                    str(data / "pki")], cwd=REPO, stdout=subprocess.PIPE,
                                   env={**os.environ, "PYTHONPATH": f"{REPO / 'gen'}:{REPO}"})
        try:
            assert discard.stdout is not None
            discard.stdout.readline()  # "ready"
            gateway_url, baseline_url = f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{baseline_port}"
            await asyncio.gather(_wait_http(gateway_url, gateway), _wait_http(baseline_url, baseline))
            async with MobileApp(gateway_url, card, PIN, PASSWORD, timeout=UPLOAD_TIMEOUT_S) as phone:
                await phone.sign_in()
                drafts = [await phone.create_draft("child_allowance.certification", child_allowance_form(card))
                          for _ in range(2 * UPLOADS * ROUNDS + 1)]
                headers = phone._headers()
                token = phone.session["accessToken"]
            ids = [d["applicationId"] for d in drafts]
            warm, ids = ids[0], ids[1:]
            # Warm-up: one upload each, so both processes have imported and allocated what they need.
            await _ten_at_once(gateway_url, [f"/v1/applications/{warm}/attachments"], body, content_type, headers)
            await _ten_at_once(baseline_url, ["/upload"], body, content_type, {})
            idle_gateway, idle_baseline = rss_mib(gateway.pid), rss_mib(baseline.pid)
            megabytes = len(body) * UPLOADS / 1e6
            through_gateway = _Tally({"gateway": gateway.pid, "server": server.process.pid})
            bare = _Tally({"baseline": baseline.pid})
            direct = _Tally({"server": server.process.pid})
            floor = _Tally({"discard": discard.pid})
            # Interleaved rounds: noise from the shared machine falls on all three subjects alike.
            for index in range(ROUNDS):
                batch, ids = ids[:UPLOADS], ids[UPLOADS:]
                paths = [f"/v1/applications/{a}/attachments" for a in batch]
                await through_gateway.round(megabytes, _ten_at_once(gateway_url, paths, body, content_type, headers))
                await bare.round(megabytes, _ten_at_once(baseline_url, ["/upload"] * UPLOADS, body, content_type, {}))
                batch, ids = ids[:UPLOADS], ids[UPLOADS:]
                await direct.round(len(photo) * UPLOADS / 1e6, _grpc_ten_at_once(
                    server, data / "pki", token, batch, photo, str(index)))
                await floor.round(len(photo) * UPLOADS / 1e6, _grpc_discard_ten_at_once(
                    discard_port, data / "pki", photo))
            gateway_peak, baseline_peak = peak_rss_mib(gateway.pid), peak_rss_mib(baseline.pid)
        finally:
            for process in (gateway, baseline, discard):
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
            server.terminate()
    size = f"{UPLOADS}×{len(photo) / 2**20:.1f} MiB JPEG, {ROUNDS} interleaved rounds"
    return [
        Row("gateway upload (end to end, server strips EXIF and stores)", through_gateway.rate, "MB/s",
            "bare Starlette discard", bare.rate, goal=0.5, note=size),
        Row("gateway upload (end to end)", through_gateway.rate, "MB/s", "same uploads straight over gRPC",
            direct.rate, note="the gateway's cost over the server's own upload path"),
        Row("gateway upload, gateway CPU per MB", through_gateway.cpu_ms_per_mb("gateway"), "ms/MB",
            "bare Starlette discard", bare.cpu_ms_per_mb("baseline"), higher_is_better=False,
            note="multipart parsing and gRPC client stream; robust to machine load"),
        Row("gateway upload, server CPU per MB", through_gateway.cpu_ms_per_mb("server"), "ms/MB",
            "same uploads straight over gRPC", direct.cpu_ms_per_mb("server"), higher_is_better=False,
            note="receive, metadata strip (lossless), hash, sync, store"),
        Row("upload straight over gRPC (server's own path)", direct.rate, "MB/s",
            "bare grpc.aio client-stream discard", floor.rate,
            note="same messages, same TLS; the discard parses and drops them"),
        Row("upload straight over gRPC, server CPU per MB", direct.cpu_ms_per_mb("server"), "ms/MB",
            "bare grpc.aio client-stream discard", floor.cpu_ms_per_mb("discard"), higher_is_better=False,
            note="what auth, files, strip, hash, sync and the database add over the framework's floor"),
        Row("gateway peak RSS during uploads", gateway_peak, "MiB", "bare Starlette discard", baseline_peak,
            higher_is_better=False,
            note=f"idle before: gateway {idle_gateway:.0f} MiB, baseline {idle_baseline:.0f} MiB"),
    ]


def run() -> list[Row]:
    return uvloop.run(measure())


if __name__ == "__main__":
    if sys.argv[1:2] == ["baseline"]:
        serve_baseline(int(sys.argv[2]))
    elif sys.argv[1:2] == ["grpc-discard"]:
        uvloop.run(serve_grpc_discard(int(sys.argv[2]), Path(sys.argv[3])))
    else:
        from bench.__main__ import print_table

        print_table(run())
