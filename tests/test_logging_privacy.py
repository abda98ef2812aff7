"""Logs carry request ids and methods, never names, addresses, birth dates, tokens or PINs."""

from __future__ import annotations

import io
import json
import logging

import grpc
from onestop.auth.v1 import auth_pb2, auth_pb2_grpc

from server import logs
from server.testing import PIN, bearer, holder


async def test_logs_hold_no_personal_data_and_carry_request_ids(platform):
    stream = io.StringIO()
    previous = logging.getLogger().handlers[:], logging.getLogger().level
    logs.setup("DEBUG", stream)
    try:
        person = holder("個人 情報子", address="東京都千代田区秘密町9-9-9")
        _, card = await platform.add_resident(person)
        token = await platform.sign_in(card)
        stub = auth_pb2_grpc.AuthServiceStub(platform.channel())
        await stub.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=bearer(token) + (("x-request-id", "trace-me-42"),))
        challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
        try:  # a refusal is logged too
            await stub.SignIn(auth_pb2.SignInRequest(request_id="r", challenge_id=challenge.challenge_id,
                                                     certificate=card.auth_certificate_der, signature=b"bad"))
        except grpc.aio.AioRpcError:
            pass
    finally:
        logging.getLogger().handlers[:], _ = previous
        logging.getLogger().setLevel(previous[1])
    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert any(l.get("method", "").endswith("/WhoAmI") and l["request_id"] == "trace-me-42" for l in lines)
    assert any(l.get("reason") == "BAD_SIGNATURE" for l in lines)
    for secret in (person.name, "個人", person.address, "秘密町", person.birth_date.isoformat(), "19900410",
                   token, token[4:20]):
        assert secret not in text, f"{secret!r} leaked into the logs"
    assert not any(PIN in (str(v) for v in line.values()) for line in lines)


def test_formatter_drops_personal_keys_whatever_the_caller_passes():
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "x", (), None)
    record.__dict__.update({"name_kana": "ヤマダ", "address": "somewhere", "pin": "1234", "resident": "res_1"})
    line = json.loads(logs.JsonFormatter().format(record))
    assert "address" not in line and "pin" not in line and "name_kana" not in line
    assert line["resident"] == "res_1"
