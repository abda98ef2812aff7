"""`python -m gateway` as its own process: serves, and on SIGTERM ends even with a live stream open."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import httpx

from server.procs import REPO, free_port


async def test_python_m_gateway_serves_and_stops_on_sigterm_with_a_stream_open(platform, resident):
    _, card = resident
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'gen'}:{REPO}", "ONESTOP_DATA_DIR": str(platform.settings.data_dir),
           "ONESTOP_GRPC_PORT": str(platform.server.port), "ONESTOP_GRPC_MTLS_PORT": str(platform.server.mtls_port),
           "ONESTOP_HTTP_PORT": str(port), "ONESTOP_SHUTDOWN_GRACE_SECONDS": "1", "ONESTOP_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=REPO, env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base_url) as client:
            for _ in range(300):  # bounded: until it answers
                try:
                    if (await client.get("/openapi.json")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("python -m gateway did not start")
        from mobile_stub.app import MobileApp
        from server.testing import PASSWORD, PIN

        async with MobileApp(base_url, card, PIN, PASSWORD) as phone:
            await phone.sign_in()
            async with phone.client.stream("GET", "/v1/notices/stream", headers=phone._headers()) as stream:
                assert stream.status_code == 200
                lines = stream.aiter_lines()
                assert (await asyncio.wait_for(lines.__anext__(), 20)).startswith("retry:")
                process.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(process.wait, 30)
        # uvicorn drains, cancels what outlives the grace period, then re-raises the signal it caught.
        assert code in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
