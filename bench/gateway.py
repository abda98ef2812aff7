"""Ten concurrent 8 MiB photo uploads through the gateway, beside a bare Starlette discard handler.

Three processes: the gRPC server (`python -m server serve`), the gateway (`python -m gateway`,
uvicorn on uvloop) and the baseline (`python -m bench.gateway baseline PORT`: Starlette reading the
body and dropping it, same uvicorn settings). The harness (this process) signs a resident in through the
gateway with a software card, makes ten drafts, then posts ten multipart uploads of the same 8 MiB
GPS-tagged JPEG at once over real sockets, to the gateway and then to the baseline.

Figures: throughput in MB/s of request bytes (10^6 bytes per second, wall time of the ten), and
each process's peak resident memory (VmHWM from /proc). The gateway's upload is end to end: the
server also sniffs, strips EXIF/GPS by re-encoding and stores each photo before the gateway replies.
A gateway that buffered whole files would show ~80 MiB more peak memory than the baseline.

`python -m bench.gateway` prints the rows (`python -m bench.gateway baseline PORT` serves the baseline).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import uvloop

from bench.common import Row

# Kept light at import: `python -m bench.gateway baseline PORT` runs the bare handler from this module,
# and what it imports counts in the baseline's memory. The harness imports the rest in measure().
REPO = Path(__file__).resolve().parent.parent

UPLOADS = 10
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


async def _grpc_ten_at_once(server, pki_dir: Path, token: str, application_ids: list[str], photo: bytes) -> float:
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
                    request_id=f"bench-grpc-{index}", application_id=application_id, slot="health_insurance",
                    declared_content_type="image/jpeg", declared_size=len(photo), filename="photo.jpg"))
                for start in range(0, len(photo), 256 * 1024):
                    yield pb.UploadAttachmentRequest(chunk=photo[start:start + 256 * 1024])

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
        try:
            gateway_url, baseline_url = f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{baseline_port}"
            await asyncio.gather(_wait_http(gateway_url, gateway), _wait_http(baseline_url, baseline))
            async with MobileApp(gateway_url, card, PIN, PASSWORD, timeout=UPLOAD_TIMEOUT_S) as phone:
                await phone.sign_in()
                drafts = [await phone.create_draft("child_allowance.certification", child_allowance_form(card))
                          for _ in range(2 * UPLOADS + 1)]
                headers = phone._headers()
                token = phone.session["accessToken"]
            paths = [f"/v1/applications/{d['applicationId']}/attachments" for d in drafts[:UPLOADS + 1]]
            direct_ids = [d["applicationId"] for d in drafts[UPLOADS + 1:]]
            # Warm-up: one upload each, so both processes have imported and allocated what they need.
            await _ten_at_once(gateway_url, paths[:1], body, content_type, headers)
            await _ten_at_once(baseline_url, ["/upload"], body, content_type, {})
            idle_gateway, idle_baseline = rss_mib(gateway.pid), rss_mib(baseline.pid)
            gateway_mbps = await _ten_at_once(gateway_url, paths[1:], body, content_type, headers)
            baseline_mbps = await _ten_at_once(baseline_url, ["/upload"] * UPLOADS, body, content_type, {})
            gateway_peak, baseline_peak = peak_rss_mib(gateway.pid), peak_rss_mib(baseline.pid)
            direct_mbps = await _grpc_ten_at_once(server, data / "pki", token, direct_ids, photo)
        finally:
            for process in (gateway, baseline):
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
            server.terminate()
    size = f"{UPLOADS}×{len(photo) / 2**20:.1f} MiB JPEG"
    return [
        Row("gateway upload (end to end, server strips EXIF and stores)", gateway_mbps, "MB/s",
            "bare Starlette discard", baseline_mbps, note=size),
        Row("gateway upload (end to end)", gateway_mbps, "MB/s", "same uploads straight over gRPC", direct_mbps,
            note="the gateway's cost over the server's own upload path"),
        Row("gateway peak RSS during uploads", gateway_peak, "MiB", "bare Starlette discard", baseline_peak,
            higher_is_better=False,
            note=f"idle before: gateway {idle_gateway:.0f} MiB, baseline {idle_baseline:.0f} MiB"),
    ]


def run() -> list[Row]:
    return uvloop.run(measure())


if __name__ == "__main__":
    if sys.argv[1:2] == ["baseline"]:
        serve_baseline(int(sys.argv[2]))
    else:
        from bench.__main__ import print_table

        print_table(run())
