"""Assemble and run the one async server: every area's services, health, reflection, interceptors."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import signal
from dataclasses import dataclass

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from server.clock import Clock, SystemClock
from server.config import Settings
from server.db import AREAS, Database
from server.interceptors import Pipeline, WrappingRegistrar
from server.platform import Platform
from server.timers import install as install_timers

log = logging.getLogger("onestop.server")


def area_modules() -> list:
    """`server.<area>.service` for every area that has one, in dependency order."""
    modules = []
    for area in AREAS:
        name = f"server.{area}.service"
        if area != "core" and importlib.util.find_spec(f"server.{area}") and importlib.util.find_spec(name):
            modules.append(importlib.import_module(name))
    return modules


@dataclass
class RunningServer:
    """A started server. Two TLS listeners serve the same services:

    - `port` (ONESTOP_GRPC_PORT): TLS without client certificates — residents (bearer tokens),
      anonymous callers (challenges, certificate verification);
    - `mtls_port` (ONESTOP_GRPC_MTLS_PORT): TLS that requires a platform client certificate —
      machine principals (municipal systems, kiosks, partners, shops, the gateway, operators).

    Two listeners because gRPC's TLS either never asks for a client certificate or requires one;
    the authorisation rules, not the port, decide what each caller may do.
    """

    server: aio.Server
    platform: Platform
    port: int
    mtls_port: int
    health: health.aio.HealthServicer

    def target(self, *, machine: bool = False) -> str:
        return f"127.0.0.1:{self.mtls_port if machine else self.port}"

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish within `grace`, then close the database."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace if grace is not None else self.platform.settings.shutdown_grace_seconds)
        for hook in self.platform.on_shutdown:
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook failed")
        await self.platform.db.close()


def _credentials(settings: Settings, *, client_certificates: bool) -> grpc.ServerCredentials | None:
    if not settings.tls:
        return None
    pki = settings.pki_dir
    cert = (settings.tls_cert or pki / "server.pem").read_bytes()
    key = (settings.tls_key or pki / "server.key").read_bytes()
    if not client_certificates:
        return grpc.ssl_server_credentials([(key, cert)])
    client_ca = (settings.client_ca or pki / "ca.pem").read_bytes()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca, require_client_auth=True)


class PortTaken(RuntimeError):
    """A listener's address is in use."""


async def start(settings: Settings, *, clock: Clock | None = None, port: int | None = None,
                mtls_port: int | None = None) -> RunningServer:
    """Open storage, build every area, bind, start. `port=0` picks free ports for both listeners (tests)."""
    clock = clock or SystemClock()
    db = await Database(settings.db_path, read_connections=settings.read_connections,
                        synchronous=settings.db_synchronous).open()
    platform = Platform(settings=settings, clock=clock, db=db)
    modules = area_modules()
    for module in modules:
        if hasattr(module, "prepare"):
            await module.prepare(platform)
    resolver = platform.services.get("resolve_token")
    if resolver is None:
        async def resolver(token: str):  # no auth area: nobody can sign in
            from server.errors import Unauthenticated
            raise Unauthenticated("TOKEN_INVALID", "sign-in is not available")
    limit = settings.max_message_bytes
    server = aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
        ],
    )
    names = [reflection.SERVICE_NAME, health.SERVICE_NAME]
    registrar = WrappingRegistrar(server, Pipeline(resolver))
    for module in modules:
        names += module.add_to_server(registrar, platform)
    health_servicer = health.aio.HealthServicer()
    # Through the registrar too (it leaves /grpc.* unwrapped): grpc.aio waits on one pending request
    # per method registered with the server itself, on every call.
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registrar)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflection.aio.ReflectionServicer(names), registrar)
    public_port = settings.grpc_port if port is None else port
    if mtls_port is None:
        mtls_port = 0 if port == 0 else settings.grpc_mtls_port or public_port + 1
    bound_ports = []
    for number, client_certificates in ((public_port, False), (mtls_port, True)):
        address = f"{settings.grpc_host}:{number}"
        credentials = _credentials(settings, client_certificates=client_certificates)
        try:
            bound_ports.append(server.add_secure_port(address, credentials) if credentials
                               else server.add_insecure_port(address))
        except RuntimeError:  # grpc's "Failed to bind": say which setting chooses another port
            await db.close()
            raise PortTaken(f"cannot listen on {address}: the port is in use (another server?); "
                            "ONESTOP_GRPC_PORT and ONESTOP_GRPC_MTLS_PORT choose others") from None
    bound, bound_mtls = bound_ports
    await server.start()
    for name in names:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    install_timers(platform)  # background sweeps; stopped first at shutdown
    log.info("grpc serving", extra={"listen": f"{settings.grpc_host}:{bound}", "mtls": bound_mtls,
                                    "tls": settings.tls})
    return RunningServer(server=server, platform=platform, port=bound, mtls_port=bound_mtls, health=health_servicer)


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, then drain in-flight calls and exit cleanly."""
    running = await start(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("draining", extra={"grace_s": settings.shutdown_grace_seconds})
    await running.stop()
    log.info("stopped")
