"""Oversized messages are refused with RESOURCE_EXHAUSTED before any handler runs."""

from __future__ import annotations

import grpc
import pytest
from onestop.auth.v1 import auth_pb2, auth_pb2_grpc


async def test_oversized_message_refused(platform):
    stub = auth_pb2_grpc.AuthServiceStub(platform.channel())
    big = auth_pb2.SignInRequest(request_id="r", challenge_id="c", certificate=b"\0" * (5 * 1024 * 1024),
                                 signature=b"s")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.SignIn(big)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    async with platform.db.read() as tx:
        assert await tx.scalar("SELECT count(*) FROM sessions") == 0
    # The server is still there for everyone else.
    assert (await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())).challenge_id
