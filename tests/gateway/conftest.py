"""The gateway in front of a real server: in-process (httpx.ASGITransport) and over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from gateway.app import create_app
from mobile_stub.app import MobileApp
from server.testing import PASSWORD, PIN, holder


@dataclass
class Gateway:
    app: object
    client: httpx.AsyncClient       # in-process
    base_url: str = ""              # set by the `served` fixture (real socket)

    def phone(self, card, *, transport: httpx.AsyncBaseTransport | None = None, base_url: str | None = None
              ) -> MobileApp:
        if transport is None and base_url is None:
            transport = httpx.ASGITransport(app=self.app)
        return MobileApp(base_url or "http://gateway", card, PIN, PASSWORD, transport=transport)


@pytest.fixture
async def gateway(platform):
    app = create_app(platform.settings, grpc_target=platform.server.target(machine=True))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            yield Gateway(app, client)


@contextlib.asynccontextmanager
async def serve(app) -> AsyncIterator[str]:
    """uvicorn on 127.0.0.1, port 0, in a background task; yields the base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, loop="none", lifespan="on", log_level="warning",
                            access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):  # bounded: the server starts in well under a second
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def served(platform):
    """The gateway over a real socket (its own lifespan, as in production)."""
    app = create_app(platform.settings, grpc_target=platform.server.target(machine=True))
    async with serve(app) as base_url:
        yield Gateway(app, httpx.AsyncClient(base_url=base_url), base_url)


async def add_resident(platform, who=None, lgcode: str = "131016"):
    """A resident of `lgcode` with a freshly issued, linked card: (resident_id, card)."""
    return await platform.add_resident(who or holder(), lgcode)


@pytest.fixture
async def resident(platform):
    return await add_resident(platform)
