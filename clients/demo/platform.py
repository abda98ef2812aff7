"""Where the demo plays: a platform someone already runs, or one it starts itself.

    async with own_platform() as endpoints:      # `python -m server run` on a fresh data dir
        ...
    endpoints = Endpoints.given("127.0.0.1:50051", "http://127.0.0.1:8080", Path("var"))

The self-started platform is the real thing, as `make run` starts it: a `python -m server run`
subprocess (gRPC on two TLS listeners, the gateway, the development PKI, the real municipality list,
the demo residents), on free loopback ports and a temporary data directory that is removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.bootstrap import DEMO_RESIDENTS
from server.procs import free_port

REPO = Path(__file__).resolve().parents[2]
READY_SECONDS = 120.0   # a shared 2-core machine: loading ~1,900 municipalities takes a while
STOP_SECONDS = 30.0


class PlatformDidNotStart(Exception):
    pass


@dataclass(frozen=True)
class Endpoints:
    """How to reach one platform, and the development PKI it trusts (cards, machine certificates)."""

    target: str          # gRPC TLS listener without client certificates (residents, anyone)
    mtls_target: str     # gRPC TLS listener that requires a platform client certificate (machines)
    gateway: str         # the smartphone gateway's base URL
    data_dir: Path       # holds pki/ (ca.pem, the CA keys, cards/)

    @property
    def pki_dir(self) -> Path:
        return self.data_dir / "pki"

    def card_path(self, file_name: str) -> Path:
        return self.pki_dir / "cards" / f"{file_name}.json"

    @classmethod
    def given(cls, target: str, gateway: str, data_dir: Path, mtls_target: str | None = None) -> "Endpoints":
        """A running platform; its mTLS listener defaults to the next port (as Settings does)."""
        if mtls_target is None:
            host, _, port = target.rpartition(":")
            mtls_target = f"{host}:{int(port) + 1}"
        return cls(target, mtls_target, gateway.rstrip("/"), data_dir)


async def wait_until_ready(endpoints: Endpoints, process: subprocess.Popen | None = None,
                           timeout: float = READY_SECONDS) -> None:
    """Until gRPC health says SERVING, the gateway answers and the demo cards exist (bounded)."""
    deadline = time.monotonic() + timeout
    ca_path = endpoints.pki_dir / "ca.pem"
    last = "nothing tried yet"
    async with httpx.AsyncClient(base_url=endpoints.gateway, timeout=2.0) as http:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise PlatformDidNotStart(f"`python -m server run` exited with status {process.returncode}")
            try:
                if not ca_path.is_file():
                    raise FileNotFoundError("no platform CA yet")
                credentials = grpc.ssl_channel_credentials(ca_path.read_bytes())
                async with grpc.aio.secure_channel(endpoints.target, credentials) as channel:
                    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                                             timeout=2)
                if health.status != health_pb2.HealthCheckResponse.SERVING:
                    raise ConnectionError(f"gRPC health: {health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)}")
                # The gateway starts only after the bootstrap (municipalities, demo residents) is done.
                (await http.get("/openapi.json")).raise_for_status()
                missing = [d.file_name for d in DEMO_RESIDENTS if not endpoints.card_path(d.file_name).is_file()]
                if missing:
                    raise FileNotFoundError(f"demo cards not there yet: {missing}")
                return
            except (OSError, grpc.aio.AioRpcError, httpx.HTTPError) as error:
                last = str(error).splitlines()[0] if str(error) else type(error).__name__
                await asyncio.sleep(0.25)
    raise PlatformDidNotStart(f"the platform was not ready after {timeout:.0f} s (last: {last})")


def _stop(process: subprocess.Popen) -> int:
    """SIGTERM (the server drains, stops its gateway), then SIGKILL if it takes too long."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(10)


@contextlib.asynccontextmanager
async def own_platform(*, keep: bool = False, say=print) -> AsyncIterator[Endpoints]:
    """Start `python -m server run` on a fresh temporary data dir and free ports; stop it at the end."""
    data_dir = Path(tempfile.mkdtemp(prefix="onestop-demo-"))
    port, mtls_port, http_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "gen"), str(REPO)]),
        "ONESTOP_DATA_DIR": str(data_dir),
        "ONESTOP_GRPC_PORT": str(port),
        "ONESTOP_GRPC_MTLS_PORT": str(mtls_port),
        "ONESTOP_HTTP_PORT": str(http_port),
        "ONESTOP_LOG_LEVEL": os.environ.get("ONESTOP_DEMO_LOG_LEVEL", "WARNING"),
    }
    env.pop("ONESTOP_CONFIG", None)  # nothing from an operator's file: this platform is the demo's own
    log_path = data_dir / "platform.log"
    endpoints = Endpoints(f"127.0.0.1:{port}", f"127.0.0.1:{mtls_port}", f"http://127.0.0.1:{http_port}", data_dir)
    say(f"starting a platform of its own: python -m server run (data {data_dir}, gRPC {endpoints.target} "
        f"/ mTLS {endpoints.mtls_target}, gateway {endpoints.gateway})")
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "server", "run"], cwd=REPO, env=env,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            await wait_until_ready(endpoints, process)
        except PlatformDidNotStart:
            say(_tail(log_path))
            raise
        say(f"platform ready in {time.monotonic() - started:.1f} s")
        yield endpoints
    finally:
        status = _stop(process)  # blocking on purpose: nothing else runs now, and a cancel must not skip it
        if status not in (0, -signal.SIGTERM):
            say(f"the platform stopped with status {status}; its log:\n{_tail(log_path)}")
        if keep:
            say(f"kept the platform's data in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no platform log)"
    return "\n".join(["--- platform log (last lines) ---", *text[-lines:], "---"])
