"""Start real `python -m server serve` processes (multi-process and kill tests, benchmarks)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    process: subprocess.Popen
    port: int
    mtls_port: int
    data_dir: Path

    def target(self, *, machine: bool = False) -> str:
        return f"127.0.0.1:{self.mtls_port if machine else self.port}"

    def terminate(self, timeout: float = 20) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


async def spawn_server(data_dir: Path, *, env: dict[str, str] | None = None, ready_timeout: float = 30) -> ServerProcess:
    """A server process on `data_dir` (which must hold pki/), ready when its health check says SERVING."""
    port, mtls_port = free_port(), free_port()
    environment = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'gen'}:{REPO}",
        "ONESTOP_DATA_DIR": str(data_dir),
        "ONESTOP_GRPC_PORT": str(port),
        "ONESTOP_GRPC_MTLS_PORT": str(mtls_port),
        "ONESTOP_LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    process = subprocess.Popen([sys.executable, "-m", "server", "serve"], cwd=REPO, env=environment)
    running = ServerProcess(process, port, mtls_port, data_dir)
    credentials = grpc.ssl_channel_credentials((data_dir / "pki" / "ca.pem").read_bytes())
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            async with grpc.aio.secure_channel(running.target(), credentials) as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return running
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
    process.kill()
    raise TimeoutError("server did not become ready")
