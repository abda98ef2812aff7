"""Challenges made without a write: the MAC'd id, its derived nonce, and single use through the spent record."""

from __future__ import annotations

import grpc
import pytest
from onestop.auth.v1 import auth_pb2, auth_pb2_grpc

from server.auth.challenges import ID_LENGTH, ChallengeKey, new_key
from server.clock import to_epoch_ms
from server.testing import TEST_START, holder, run_platform
from tests.auth.test_signin import sign_in_request
from tests.helpers import expect_error

U = grpc.StatusCode.UNAUTHENTICATED
EXPIRES_MS = to_epoch_ms(TEST_START) + 120_000


def _altered(text: str, index: int) -> str:
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1:]


def test_an_id_opens_only_with_the_key_that_made_it_and_unaltered():
    key = ChallengeKey(new_key())
    challenge_id, nonce = key.make(EXPIRES_MS)
    assert len(challenge_id) == ID_LENGTH and challenge_id.startswith("chl_")
    assert key.open(challenge_id) == (EXPIRES_MS, nonce) and len(nonce) == 32
    assert ChallengeKey(new_key()).open(challenge_id) is None
    for index in range(len(challenge_id)):  # every character is covered by the tag
        assert key.open(_altered(challenge_id, index)) is None, index
    later = f"chl_{EXPIRES_MS + 3_600_000:012x}" + challenge_id[16:]  # a longer life, forged
    assert key.open(later) is None
    for junk in ("", "chl_", challenge_id[:-1], challenge_id + "A", "chl_" + "é" * (ID_LENGTH - 4)):
        assert key.open(junk) is None


def test_ids_are_unique_and_nonces_unpredictable_from_the_id():
    key = ChallengeKey(new_key())
    made = [key.make(EXPIRES_MS) for _ in range(200)]
    assert len({i for i, _ in made}) == len({n for _, n in made}) == 200
    assert all(nonce.hex() not in challenge_id for challenge_id, nonce in made)


@pytest.fixture
async def enrolled(platform):
    _, card = await platform.add_resident(holder())
    return platform, auth_pb2_grpc.AuthServiceStub(platform.channel()), card


async def test_making_a_challenge_writes_nothing_and_only_a_sign_in_spends_it(enrolled):
    platform, stub, card = enrolled
    commits = platform.db._commits
    challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
    assert platform.db._commits == commits
    assert (await platform.db.query("SELECT count(*) FROM challenges"))[0][0] == 0
    await stub.SignIn(sign_in_request(challenge, card))
    rows = await platform.db.query("SELECT challenge_id, expires_at_ms FROM challenges")
    assert [tuple(r) for r in rows] == [(challenge.challenge_id, _ms(challenge))]
    await expect_error(stub.SignIn(sign_in_request(challenge, card)), U, "NONCE_REPLAYED")


def _ms(challenge) -> int:
    return challenge.expires_at.ToMilliseconds()


async def test_a_tampered_challenge_id_is_unknown(enrolled):
    _, stub, card = enrolled
    challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
    forged = auth_pb2.CreateChallengeResponse(
        challenge_id=f"chl_{_ms(challenge) + 3_600_000:012x}" + challenge.challenge_id[16:], nonce=challenge.nonce)
    await expect_error(stub.SignIn(sign_in_request(forged, card)), U, "NONCE_UNKNOWN")
    altered = auth_pb2.CreateChallengeResponse(challenge_id=_altered(challenge.challenge_id, 30), nonce=challenge.nonce)
    await expect_error(stub.SignIn(sign_in_request(altered, card)), U, "NONCE_UNKNOWN")
    await stub.SignIn(sign_in_request(challenge, card))  # the real one still works, once


async def test_a_challenge_from_another_database_is_unknown(enrolled, tmp_path, pki_template):
    platform, stub, card = enrolled
    async with run_platform(tmp_path / "other", pki_template=pki_template) as other:
        foreign = await auth_pb2_grpc.AuthServiceStub(other.channel()).CreateChallenge(
            auth_pb2.CreateChallengeRequest())
    await expect_error(stub.SignIn(sign_in_request(foreign, card)), U, "NONCE_UNKNOWN")


async def test_the_key_outlives_a_restart_so_outstanding_challenges_still_sign_in(tmp_path, pki_template):
    async with run_platform(tmp_path, pki_template=pki_template) as first:
        _, card = await first.add_resident(holder())
        challenge = await auth_pb2_grpc.AuthServiceStub(first.channel()).CreateChallenge(
            auth_pb2.CreateChallengeRequest())
    async with run_platform(tmp_path, pki_template=pki_template) as second:  # same data directory
        stub = auth_pb2_grpc.AuthServiceStub(second.channel())
        await stub.SignIn(sign_in_request(challenge, card))
        await expect_error(stub.SignIn(sign_in_request(challenge, card)), U, "NONCE_REPLAYED")
        assert (await second.db.query("SELECT count(*) FROM challenge_keys"))[0][0] == 1


async def test_a_spent_challenge_stays_refused_after_its_record_is_purged(enrolled):
    platform, stub, card = enrolled
    challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
    await stub.SignIn(sign_in_request(challenge, card))
    platform.clock.advance(hours=1, minutes=3)
    assert (await platform.server.platform.services["timers"].run_due())["challenge_purge"] == 1
    await expect_error(stub.SignIn(sign_in_request(challenge, card)), U, "NONCE_EXPIRED")
