"""Real server processes: two on one database behave as one; SIGTERM drains in-flight calls."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from onestop.auth.v1 import auth_pb2, auth_pb2_grpc

from clients.pki import DevPki, SoftwareCard
from server.bootstrap import enrol_resident
from server.db import Database
from server.procs import spawn_server
from server.testing import PASSWORD, PIN, holder
from tests.helpers import error_details


@pytest.fixture
async def shared_dir(tmp_path):
    """A data directory with a PKI valid now (real processes use the real clock) and one resident."""
    now = datetime.now(timezone.utc)
    data = tmp_path / "data"
    pki = DevPki.ensure(data / "pki", now=now)
    card = SoftwareCard.load(pki.issue_card(holder(), PIN, PASSWORD, "hanako", now=now))
    db = await Database(data / "onestop.db").open()
    await enrol_resident(db, holder(), card, "131016", now=now)
    await db.close()
    return data, card


async def _until_draining(ch, attempts: int = 200) -> None:
    """Wait (bounded) until the server reports it is shutting down."""
    health = health_pb2_grpc.HealthStub(ch)
    for _ in range(attempts):
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("server never started draining")


def channel(server, data):
    return grpc.aio.secure_channel(server.target(), grpc.ssl_channel_credentials((data / "pki/ca.pem").read_bytes()))


async def test_two_processes_accept_a_challenge_exactly_once(shared_dir):
    data, card = shared_dir
    a, b = await asyncio.gather(spawn_server(data), spawn_server(data))
    try:
        async with channel(a, data) as ca, channel(b, data) as cb:
            stub_a, stub_b = auth_pb2_grpc.AuthServiceStub(ca), auth_pb2_grpc.AuthServiceStub(cb)
            for attempt in range(5):
                challenge = await stub_a.CreateChallenge(auth_pb2.CreateChallengeRequest())
                request = auth_pb2.SignInRequest(
                    request_id=f"r{attempt}", challenge_id=challenge.challenge_id,
                    certificate=card.auth_certificate_der, signature=card.sign_with_auth_key(challenge.nonce, PIN))
                results = await asyncio.gather(stub_a.SignIn(request), stub_b.SignIn(request), return_exceptions=True)
                won = [r for r in results if isinstance(r, auth_pb2.SignInResponse)]
                lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
                assert len(won) == 1 and len(lost) == 1, results
                assert error_details(lost[0])[0] == "NONCE_REPLAYED"
                # The session made by one process is honoured by the other.
                token = won[0].session.access_token
                for stub in (stub_a, stub_b):
                    me = await stub.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=(("authorization", f"Bearer {token}"),))
                    assert me.resident_id == won[0].session.resident_id
                await stub_b.SignOut(auth_pb2.SignOutRequest(request_id=f"o{attempt}"),
                                     metadata=(("authorization", f"Bearer {token}"),))
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    await stub_a.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=(("authorization", f"Bearer {token}"),))
                assert error_details(ended.value)[0] == "SESSION_ENDED"
    finally:
        for server in (a, b):
            server.kill()


async def test_sigterm_drains_in_flight_calls_and_exits_zero(shared_dir):
    data, _ = shared_dir
    server = await spawn_server(data)
    try:
        async with channel(server, data) as ch:
            requests: asyncio.Queue = asyncio.Queue()

            async def feed():
                while (item := await requests.get()) is not None:
                    yield item

            stream = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(feed())
            ask = reflection_pb2.ServerReflectionRequest(list_services="")
            await requests.put(ask)
            first = await stream.read()
            assert any(s.name == "onestop.auth.v1.AuthService" for s in first.list_services_response.service)
            exit_code = asyncio.get_running_loop().run_in_executor(None, server.terminate)
            await _until_draining(ch)
            # A new call is refused while the old one drains.
            async with channel(server, data) as fresh:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await auth_pb2_grpc.AuthServiceStub(fresh).CreateChallenge(
                        auth_pb2.CreateChallengeRequest(), timeout=2)
                assert refused.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            await requests.put(ask)
            second = await stream.read()  # the in-flight stream still answers
            assert second.list_services_response.service
            await requests.put(None)
            assert await stream.code() == grpc.StatusCode.OK
            assert await exit_code == 0
    finally:
        if server.process.poll() is None:
            server.kill()


async def test_a_port_in_use_is_one_clear_error(tmp_path):
    import socket

    from server import app
    from server.config import Settings
    from server.testing import make_pki

    make_pki(tmp_path / "data" / "pki")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        settings = Settings(data_dir=tmp_path / "data", grpc_port=port, timers=False)
        with pytest.raises(app.PortTaken, match=f"127.0.0.1:{port}.*ONESTOP_GRPC_PORT"):
            await app.start(settings)
