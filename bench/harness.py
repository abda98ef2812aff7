"""The one client harness every gRPC benchmark uses, and the bare baselines it is compared with.

Servers run in their own processes (the machine has two cores: one for the server, one for the
client harness); the client drives `concurrency` tasks for a fixed time and counts completions.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from server.procs import REPO, free_port

ECHO_SERVER = Path(__file__).with_name("echo_server.py")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Throughput:
    calls: int
    seconds: float
    latencies_ms: list[float]
    server_cpu: float = float("nan")  # CPU seconds the serving process spent on these calls

    @property
    def server_cpu_us_per_call(self) -> float:
        """Server CPU per call: unlike wall-clock throughput, hardly moved by other load on the machine."""
        return self.server_cpu / self.calls * 1e6 if self.calls else float("nan")

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")


async def drive(call: Callable[[int], Awaitable[object]], *, concurrency: int = 50, seconds: float = 3.0,
                max_calls: int = 200_000, warmup: float = 0.5) -> Throughput:
    """Run `call(worker_index)` from `concurrency` tasks for `seconds` (after a warm-up); bounded."""
    stop_at = time.perf_counter() + warmup
    while time.perf_counter() < stop_at:
        await asyncio.gather(*(call(i) for i in range(min(concurrency, 8))))
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        while time.perf_counter() < deadline and len(latencies) < max_calls:
            started = time.perf_counter()
            await call(index)
            latencies.append((time.perf_counter() - started) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return Throughput(len(latencies), time.perf_counter() - began, latencies)


async def interleaved(calls: dict[str, Callable[[int], Awaitable[object]]], *, pids: dict[str, int] | None = None,
                      rounds: int = 4, seconds: float = 1.0, concurrency: int = 50) -> dict[str, Throughput]:
    """Measure several subjects in alternating short rounds, so that noise from a shared machine
    falls on all of them alike; returns each subject's totals over its rounds (with the serving
    process's CPU time where its pid is given)."""
    totals: dict[str, list[Throughput]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            pid = (pids or {}).get(name)
            before = cpu_seconds(pid) if pid else float("nan")
            run = await drive(call, concurrency=concurrency, seconds=seconds, warmup=0.2)
            used = cpu_seconds(pid) - before if pid else float("nan")
            totals[name].append(Throughput(run.calls, run.seconds, run.latencies_ms, used))
    return {
        name: Throughput(sum(t.calls for t in runs), sum(t.seconds for t in runs),
                         [x for t in runs for x in t.latencies_ms], sum(t.server_cpu for t in runs))
        for name, runs in totals.items()
    }


class EchoServer:
    """A bare grpc.aio server on uvloop with the same TLS as ours: unary echo and bidi echo."""

    def __init__(self, pki_dir: Path) -> None:
        self.port = free_port()
        self._pki = pki_dir
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def __enter__(self) -> "EchoServer":
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'gen'}:{REPO}"}
        self._process = subprocess.Popen([sys.executable, str(ECHO_SERVER), str(self.port), str(self._pki)], env=env,
                                         stdout=subprocess.PIPE)
        assert self._process.stdout is not None
        self._process.stdout.readline()  # "ready"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()

    def channel(self) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials((self._pki / "ca.pem").read_bytes())
        return grpc.aio.secure_channel(f"127.0.0.1:{self.port}", credentials)


def unary_echo(channel: grpc.aio.Channel) -> Callable[[bytes], Awaitable[bytes]]:
    return channel.unary_unary("/bench.Echo/Unary")


def stream_echo(channel: grpc.aio.Channel):
    return channel.stream_stream("/bench.Echo/Stream")
