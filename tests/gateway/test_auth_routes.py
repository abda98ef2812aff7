"""Sign-in through the gateway, error mapping with google.rpc.Status bodies, request ids end to end."""

from __future__ import annotations

import base64
import logging

import pytest

from mobile_stub.app import GatewayCallError
from server import context


def reason(body: dict) -> str:
    return next(d["reason"] for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo"))


def fields(body: dict) -> list[str]:
    return [v["field"] for d in body["details"] if d["@type"].endswith("google.rpc.BadRequest")
            for v in d["fieldViolations"]]


async def test_sign_in_through_the_gateway_then_who_am_i(platform, gateway, resident):
    resident_id, card = resident
    async with gateway.phone(card) as phone:
        session = await phone.sign_in()
        assert session["residentId"] == resident_id
        me = await phone.me()
    assert me == {**me, "kind": "CALLER_KIND_RESIDENT", "residentId": resident_id, "municipalityCode": "131016"}


async def test_sign_in_over_a_real_socket_and_sign_out_ends_the_token(platform, served, resident):
    resident_id, card = resident
    async with served.phone(card, base_url=served.base_url) as phone:
        await phone.sign_in()
        assert (await phone.me())["residentId"] == resident_id
        token = phone.session["accessToken"]
        await phone.sign_out()
        phone.session = {"accessToken": token}
        with pytest.raises(GatewayCallError) as refused:
            await phone.me()
    assert refused.value.status_code == 401
    assert refused.value.reason == "SESSION_ENDED"


async def test_me_without_a_token_is_anonymous_not_the_gateway(gateway):
    reply = await gateway.client.get("/v1/me")
    assert reply.status_code == 200
    assert reply.json()["kind"] == "CALLER_KIND_ANONYMOUS"
    assert reply.json()["role"] == ""


async def test_missing_fields_come_back_as_400_with_field_violations(gateway):
    reply = await gateway.client.post("/v1/auth/sign-in", json={"challengeId": "x"})
    assert reply.status_code == 400
    body = reply.json()
    assert body["code"] == 3  # INVALID_ARGUMENT
    assert reason(body) == "INVALID_FIELD"
    assert fields(body), body
    assert body["message"]


async def test_unknown_nonce_is_401_with_its_reason(gateway, resident):
    _, card = resident
    reply = await gateway.client.post("/v1/auth/sign-in", json={
        "challengeId": "chl_nope", "certificate": base64.b64encode(card.auth_certificate_der).decode(),
        "signature": base64.b64encode(b"\x00" * 256).decode()})
    assert reply.status_code == 401
    assert reply.json()["code"] == 16
    assert reason(reply.json()) == "NONCE_UNKNOWN"


async def test_a_nonce_signs_in_once_through_the_gateway(gateway, resident):
    _, card = resident
    async with gateway.phone(card) as phone:
        challenge = await phone.request("POST", "/v1/auth/challenge", json_body={})
        nonce = base64.b64decode(challenge["nonce"])
        body = {"challengeId": challenge["challengeId"],
                "certificate": base64.b64encode(card.auth_certificate_der).decode(),
                "signature": base64.b64encode(card.sign_with_auth_key(nonce, "1234")).decode()}
        first = await gateway.client.post("/v1/auth/sign-in", json=body)
        second = await gateway.client.post("/v1/auth/sign-in", json=body)
    assert first.status_code == 200
    assert second.status_code == 401
    assert reason(second.json()) == "NONCE_REPLAYED"


async def test_malformed_json_is_400_and_a_wrong_shape_is_422(gateway):
    bad = await gateway.client.post("/v1/auth/sign-in", content=b"{not json",
                                    headers={"content-type": "application/json"})
    assert bad.status_code == 400
    assert reason(bad.json()) == "MALFORMED_JSON"
    shape = await gateway.client.post("/v1/auth/sign-in", json={"challengeId": "x", "colour": "blue"})
    assert shape.status_code == 422
    assert reason(shape.json()) == "INVALID_JSON_FIELD"
    assert fields(shape.json()) == ["colour"]
    not_base64 = await gateway.client.post("/v1/auth/sign-in", json={"certificate": 12})
    assert not_base64.status_code == 422
    assert fields(not_base64.json()) == ["certificate"]
    array = await gateway.client.post("/v1/auth/sign-in", json=[1, 2])
    assert array.status_code == 400


async def test_a_json_body_over_the_limit_is_413_before_any_call(gateway):
    reply = await gateway.client.post("/v1/auth/sign-in", content=b"{" + b" " * (1024 * 1024 + 10) + b"}",
                                      headers={"content-type": "application/json"})
    assert reply.status_code == 413
    assert reason(reply.json()) == "PAYLOAD_TOO_LARGE"


async def test_a_json_route_refuses_another_media_type(gateway):
    reply = await gateway.client.post("/v1/auth/refresh", content=b"refreshToken=x",
                                      headers={"content-type": "application/x-www-form-urlencoded"})
    assert reply.status_code == 415


async def test_bad_and_unknown_routes_answer_in_the_same_json_shape(gateway):
    missing = await gateway.client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert reason(missing.json()) == "ROUTE_NOT_FOUND"
    wrong_method = await gateway.client.delete("/v1/auth/challenge")
    assert wrong_method.status_code == 405
    assert reason(wrong_method.json()) == "METHOD_NOT_ALLOWED"


async def test_a_refresh_token_works_once(gateway, resident):
    _, card = resident
    async with gateway.phone(card) as phone:
        session = await phone.sign_in()
        first = await gateway.client.post("/v1/auth/refresh", json={"refreshToken": session["refreshToken"]})
        again = await gateway.client.post("/v1/auth/refresh", json={"refreshToken": session["refreshToken"]})
    assert first.status_code == 200
    assert first.json()["session"]["accessToken"] != session["accessToken"]
    assert again.status_code == 401


class _ServerRequestIds(logging.Handler):
    """Records the server's call-context request id of every log line, at the moment it is emitted."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[tuple[str, str]] = []
        self.callers: list[tuple[str, str, str]] = []  # (method, caller kind, machine role)

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((str(getattr(record, "method", "")), context.request_id()))
        if record.getMessage() == "rpc":
            self.callers.append((str(getattr(record, "method", "")).rsplit("/", 1)[-1],
                                 str(getattr(record, "caller", "")), str(getattr(record, "role", ""))))


async def test_request_id_is_echoed_and_reaches_the_server(platform, served, resident):
    _, card = resident
    capture = _ServerRequestIds()
    rpc_log = logging.getLogger("onestop.rpc")
    rpc_log.addHandler(capture)
    old_level = rpc_log.level
    rpc_log.setLevel(logging.INFO)
    try:
        async with served.phone(card, base_url=served.base_url) as phone:
            await phone.sign_in()
            reply = await phone.client.get("/v1/me", headers={**phone._headers(), "x-request-id": "phone-req-42"})
            refused = await phone.client.post("/v1/auth/sign-in", json={}, headers={"x-request-id": "phone-req-43"})
            made = await phone.client.get("/v1/me", headers=phone._headers())
    finally:
        rpc_log.removeHandler(capture)
        rpc_log.setLevel(old_level)
        await served.client.aclose()
    assert reply.status_code == 200 and reply.headers["x-request-id"] == "phone-req-42"
    assert refused.status_code == 400 and refused.headers["x-request-id"] == "phone-req-43"
    generated = made.headers["x-request-id"]
    assert generated.startswith("req_")
    ids_by_method = {}
    for method, rid in capture.seen:
        ids_by_method.setdefault(rid, set()).add(method.rsplit("/", 1)[-1])
    assert "WhoAmI" in ids_by_method.get("phone-req-42", set())
    assert "SignIn" in ids_by_method.get("phone-req-43", set())
    assert "WhoAmI" in ids_by_method.get(generated, set())
    # The gateway calls as its own machine principal (mTLS) and passes the phone's token through.
    assert ("CreateChallenge", "machine", "gateway") in capture.callers
    assert ("WhoAmI", "resident", "None") in capture.callers
