"""`python -m server run` (the main job: bootstrap, gRPC and the gateway) or `serve` (gRPC only)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import sys

import click
import uvloop

from server import app, bootstrap, logs
from server.clock import SystemClock
from server.config import Settings


def _banner(settings: Settings, port: int, mtls_port: int, gateway: bool, notes: list[str]) -> str:
    pki = settings.pki_dir
    lines = [
        "",
        f"onestop platform is up (development PKI, SQLite at {settings.db_path})",
        f"  gRPC (TLS)  {settings.grpc_host}:{port}   residents and anonymous callers; platform CA: {pki / 'ca.pem'}",
        f"  gRPC (mTLS) {settings.grpc_host}:{mtls_port}   machine principals (client certificates from {pki})",
    ]
    if gateway:
        lines.append(f"  gateway     http://{settings.http_host}:{settings.http_port}   (OpenAPI: /openapi.json)")
    lines += [f"  {note}" for note in notes]
    lines += [
        "",
        "Try it (from another shell, in this folder):",
        f"  PYTHONPATH=gen:. .venv/bin/python -m clients.signin --target {settings.grpc_host}:{port} "
        f"--ca {pki / 'ca.pem'} --card {pki / 'cards' / 'yamada-hanako.json'} --pin 1234",
        f"  PYTHONPATH=gen:. .venv/bin/python -m clients.kiosk transact --target {settings.grpc_host}:{mtls_port} "
        f"--pki {pki} --card {pki / 'cards' / 'yamada-hanako.json'} --pin 1234   # a convenience-store kiosk",
        f"  .venv/bin/python -m mobile_stub --base-url http://{settings.http_host}:{settings.http_port} "
        f"--card {pki / 'cards' / 'yamada-hanako.json'}   # a phone applies for 児童手当",
        f"  PYTHONPATH=gen:. .venv/bin/python -m clients.staff --target {settings.grpc_host}:{mtls_port} "
        f"--pki {pki} --lg 131016 queue   # the officer's queue",
        f"  PYTHONPATH=gen:. .venv/bin/python -m clients.demo --target {settings.grpc_host}:{port} "
        f"--gateway http://{settings.http_host}:{settings.http_port} --data-dir {settings.data_dir}   # the whole story",
        "Stop with Ctrl-C (in-flight calls finish first).",
        "",
    ]
    return "\n".join(lines)


async def _run(settings: Settings, with_gateway: bool) -> None:
    clock = SystemClock()
    pki = bootstrap.DevPki.ensure(settings.pki_dir, now=clock.now())
    running = await app.start(settings, clock=clock)
    notes = [await bootstrap.load_municipalities(running.platform.db, settings.municipalities_csv)]
    created = await bootstrap.seed_demo_residents(running.platform.db, pki, now=clock.now())
    notes.append(f"demo residents: {len(bootstrap.DEMO_RESIDENTS)} in {bootstrap.DEMO_MUNICIPALITY}"
                 f" ({len(created)} new), cards in {pki.cards_dir} (PIN {bootstrap.DEMO_PIN},"
                 f" password {bootstrap.DEMO_PASSWORD})")
    gateway = None
    if with_gateway and importlib.util.find_spec("gateway.__main__"):
        env = {**os.environ, "ONESTOP_GRPC_PORT": str(running.port)}
        gateway = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", env=env)
    print(_banner(settings, running.port, running.mtls_port, gateway is not None, notes), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiters = [asyncio.create_task(stop.wait())]
    if gateway is not None:
        waiters.append(asyncio.create_task(gateway.wait()))
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if gateway is not None and gateway.returncode is None:
        gateway.terminate()
        await gateway.wait()
    await running.stop()


@click.group()
def cli() -> None:
    """The one-stop card platform server."""


@cli.command()
@click.option("--no-gateway", is_flag=True, help="Serve gRPC only.")
def run(no_gateway: bool) -> None:
    """Bootstrap (PKI, municipalities, demo residents) and serve gRPC and the gateway."""
    settings = Settings()
    logs.setup(settings.log_level)
    _serving(_run(settings, not no_gateway))


@cli.command()
def serve() -> None:
    """Serve gRPC only on an existing data directory (exit 0 after a graceful SIGTERM)."""
    settings = Settings()
    logs.setup(settings.log_level)
    _serving(app.serve(settings))


def _serving(main) -> None:
    try:
        uvloop.run(main)
    except app.PortTaken as taken:  # one line, not a traceback
        raise click.ClickException(str(taken)) from None


if __name__ == "__main__":
    cli()
