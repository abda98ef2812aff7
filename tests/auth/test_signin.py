"""Sign-in with the card over real gRPC + TLS: every refusal by its own reason, sessions, CRLs."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from onestop.auth.v1 import auth_pb2, auth_pb2_grpc

from clients.pki import CardAuthority
from server.ids import new_id
from server.testing import PIN, TEST_START, bearer, holder, issue_card
from tests.helpers import expect_error

U = grpc.StatusCode.UNAUTHENTICATED


def sign_in_request(challenge, card, *, data: bytes | None = None, certificate: bytes | None = None):
    return auth_pb2.SignInRequest(
        request_id=new_id("rq"),
        challenge_id=challenge.challenge_id,
        certificate=card.auth_certificate_der if certificate is None else certificate,
        signature=card.sign_with_auth_key(challenge.nonce if data is None else data, PIN),
    )


@pytest.fixture
async def enrolled(platform):
    resident_id, card = await platform.add_resident(holder())
    stub = auth_pb2_grpc.AuthServiceStub(platform.channel())
    return platform, stub, resident_id, card


async def test_full_sign_in_returns_a_working_session(enrolled):
    platform, stub, resident_id, card = enrolled
    challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
    assert len(challenge.nonce) == 32
    assert challenge.expires_at.ToDatetime() > TEST_START.replace(tzinfo=None) - timedelta(hours=9)
    reply = await stub.SignIn(sign_in_request(challenge, card))
    session = reply.session
    assert session.resident_id == resident_id
    assert session.access_token.startswith("osa_") and session.refresh_token.startswith("osr_")
    me = await stub.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=bearer(session.access_token))
    assert (me.kind, me.resident_id) == (auth_pb2.CALLER_KIND_RESIDENT, resident_id)
    # Tokens are stored only as hashes.
    async with platform.db.read() as tx:
        rows = await tx.all("SELECT * FROM sessions")
    assert len(rows) == 1
    stored = b"".join(bytes(v) if isinstance(v, (bytes, bytearray)) else str(v).encode() for v in rows[0])
    assert session.access_token.encode() not in stored and session.refresh_token.encode() not in stored


async def test_nonce_signs_in_once(enrolled):
    _, stub, _, card = enrolled
    challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
    await stub.SignIn(sign_in_request(challenge, card))
    await expect_error(stub.SignIn(sign_in_request(challenge, card)), U, "NONCE_REPLAYED")


async def test_unknown_nonce(enrolled):
    _, stub, _, card = enrolled
    challenge = auth_pb2.CreateChallengeResponse(challenge_id="chl_nope", nonce=b"x" * 32)
    await expect_error(stub.SignIn(sign_in_request(challenge, card)), U, "NONCE_UNKNOWN")


async def test_nonce_expires(enrolled):
    platform, stub, _, card = enrolled
    challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
    platform.clock.advance(seconds=platform.settings.challenge_ttl_seconds)
    await expect_error(stub.SignIn(sign_in_request(challenge, card)), U, "NONCE_EXPIRED")


async def test_foreign_ca_card_refused(enrolled, tmp_path):
    _, stub, _, _ = enrolled
    foreign = CardAuthority.create(tmp_path / "foreign", now=TEST_START)
    card = foreign.issue_card(holder(), now=TEST_START, pin=PIN, password="ABC123")
    challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
    await expect_error(stub.SignIn(sign_in_request(challenge, card)), U, "UNKNOWN_ISSUER")


async def test_expired_certificate_refused(enrolled):
    platform, stub, _, card = enrolled
    platform.clock.set(card.auth_certificate.not_valid_after_utc + timedelta(seconds=1))
    challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
    await expect_error(stub.SignIn(sign_in_request(challenge, card)), U, "CERT_EXPIRED")


async def test_not_yet_valid_certificate_refused(enrolled):
    platform, stub, _, _ = enrolled
    future = issue_card(platform.pki, holder("未来 一郎", sex="1"), now=TEST_START + timedelta(days=2))
    await platform.add_resident(holder("未来 一郎", sex="1"), card=future)
    challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
    await expect_error(stub.SignIn(sign_in_request(challenge, future)), U, "CERT_NOT_YET_VALID")


async def test_signature_certificate_cannot_sign_in(enrolled):
    _, stub, _, card = enrolled
    challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
    request = sign_in_request(challenge, card, certificate=card.sign_certificate_der)
    await expect_error(stub.SignIn(request), U, "WRONG_CERTIFICATE_USAGE")


async def test_bad_signature_refused_and_nonce_still_usable_by_the_card(enrolled):
    _, stub, _, card = enrolled
    challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
    await expect_error(stub.SignIn(sign_in_request(challenge, card, data=b"something else")), U, "BAD_SIGNATURE")
    await stub.SignIn(sign_in_request(challenge, card))


async def test_malformed_certificate_refused(enrolled):
    _, stub, _, card = enrolled
    challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
    await expect_error(stub.SignIn(sign_in_request(challenge, card, certificate=b"\x30\x03junk")), U,
                       "MALFORMED_CERTIFICATE")


async def test_unlinked_card_refused(enrolled):
    platform, stub, _, _ = enrolled
    stranger = issue_card(platform.pki, holder("未登録 次郎", sex="1"))
    challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
    await expect_error(stub.SignIn(sign_in_request(challenge, stranger)), grpc.StatusCode.FAILED_PRECONDITION,
                       "CARD_NOT_LINKED")


async def test_revoked_card_refused_after_crl_intake(enrolled):
    platform, stub, _, card = enrolled
    platform.pki.revoke_card(card, now=platform.clock.now())
    operator = auth_pb2_grpc.AuthServiceStub(platform.operator())
    reply = await operator.SubmitRevocationList(auth_pb2.SubmitRevocationListRequest(
        request_id="crl-1", crl=platform.pki.crl_path.read_bytes()))
    assert reply.revoked_count == 2  # both certificates of the card
    challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
    await expect_error(stub.SignIn(sign_in_request(challenge, card)), U, "CERT_REVOKED")


async def test_card_that_signed_in_before_is_refused_once_revoked(enrolled):
    platform, stub, _, card = enrolled
    await platform.sign_in(card)  # the certificate's chain check is now remembered
    platform.pki.revoke_card(card, now=platform.clock.now())
    operator = auth_pb2_grpc.AuthServiceStub(platform.operator())
    await operator.SubmitRevocationList(auth_pb2.SubmitRevocationListRequest(
        request_id="crl-2", crl=platform.pki.crl_path.read_bytes()))
    challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
    await expect_error(stub.SignIn(sign_in_request(challenge, card)), U, "CERT_REVOKED")
    # the refusal spent nothing: no spent record holds the challenge
    assert await platform.db.query("SELECT * FROM challenges WHERE challenge_id = ?", (challenge.challenge_id,)) == []


async def test_crl_stored_by_another_process_refuses_the_next_sign_in(enrolled):
    from server.auth import store
    from server.clock import to_epoch_ms
    from server.db import Database
    from cryptography import x509

    platform, stub, _, card = enrolled
    await platform.sign_in(card)
    platform.pki.revoke_card(card, now=platform.clock.now())
    der = platform.pki.crl_path.read_bytes()
    crl = x509.load_der_x509_crl(der)
    other = await Database(platform.db.path).open()  # as another server process on the same file
    try:
        async with other.write() as tx:
            assert await store.put_crl(tx, crl.issuer.rfc4514_string(), der, to_epoch_ms(crl.last_update_utc))
    finally:
        await other.close()
    challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
    await expect_error(stub.SignIn(sign_in_request(challenge, card)), U, "CERT_REVOKED")


async def test_crl_intake_is_for_operators_only_and_checks_issuer(enrolled, tmp_path):
    platform, stub, _, _ = enrolled
    request = auth_pb2.SubmitRevocationListRequest(request_id="crl-x", crl=platform.pki.crl_path.read_bytes())
    await expect_error(stub.SubmitRevocationList(request), U, "AUTHENTICATION_REQUIRED")
    municipal = auth_pb2_grpc.AuthServiceStub(platform.municipality("131016"))
    await expect_error(municipal.SubmitRevocationList(request), grpc.StatusCode.PERMISSION_DENIED,
                       "CALLER_NOT_ALLOWED")
    foreign = CardAuthority.create(tmp_path / "foreign", now=TEST_START).crl(now=TEST_START)
    operator = auth_pb2_grpc.AuthServiceStub(platform.operator())
    await expect_error(operator.SubmitRevocationList(auth_pb2.SubmitRevocationListRequest(
        request_id="crl-f", crl=foreign)), grpc.StatusCode.FAILED_PRECONDITION, "UNKNOWN_ISSUER")
    await expect_error(operator.SubmitRevocationList(auth_pb2.SubmitRevocationListRequest(
        request_id="crl-g", crl=b"not a crl")), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "crl")


async def test_missing_fields_are_named(enrolled):
    _, stub, _, _ = enrolled
    await expect_error(stub.SignIn(auth_pb2.SignInRequest(challenge_id="c", certificate=b"x", signature=b"y")),
                       grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "request_id")
    await expect_error(stub.SignIn(auth_pb2.SignInRequest(request_id="r", certificate=b"x", signature=b"y")),
                       grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "challenge_id")


async def test_sign_out_ends_the_session_everywhere(enrolled):
    platform, stub, _, card = enrolled
    token = await platform.sign_in(card)
    await stub.SignOut(auth_pb2.SignOutRequest(request_id="out-1"), metadata=bearer(token))
    await expect_error(stub.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=bearer(token)), U, "SESSION_ENDED")


async def test_idle_and_absolute_lifetimes(enrolled):
    platform, stub, _, card = enrolled
    token = await platform.sign_in(card)
    platform.clock.advance(seconds=platform.settings.session_idle_seconds - 60)
    await stub.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=bearer(token))  # use extends the idle window
    platform.clock.advance(seconds=platform.settings.session_idle_seconds - 60)
    await stub.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=bearer(token))
    platform.clock.advance(seconds=platform.settings.session_idle_seconds + 1)
    await expect_error(stub.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=bearer(token)), U, "SESSION_EXPIRED")


async def test_refresh_rotates_tokens_but_never_passes_the_absolute_limit(enrolled):
    platform, stub, _, card = enrolled
    challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
    first = (await stub.SignIn(sign_in_request(challenge, card))).session
    refreshed = (await stub.RefreshSession(auth_pb2.RefreshSessionRequest(
        request_id="rf-1", refresh_token=first.refresh_token))).session
    assert refreshed.session_id == first.session_id and refreshed.access_token != first.access_token
    await expect_error(stub.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=bearer(first.access_token)), U, "TOKEN_INVALID")
    await expect_error(stub.RefreshSession(auth_pb2.RefreshSessionRequest(
        request_id="rf-2", refresh_token=first.refresh_token)), U, "TOKEN_INVALID")
    platform.clock.advance(seconds=platform.settings.session_absolute_seconds)
    await expect_error(stub.RefreshSession(auth_pb2.RefreshSessionRequest(
        request_id="rf-3", refresh_token=refreshed.refresh_token)), U, "SESSION_EXPIRED")


async def test_garbage_bearer_token_is_unauthenticated(enrolled):
    _, stub, _, _ = enrolled
    await expect_error(stub.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=bearer("osa_forged")), U, "TOKEN_INVALID")
    await expect_error(stub.WhoAmI(auth_pb2.WhoAmIRequest(), metadata=(("authorization", "Basic x"),)), U,
                       "MALFORMED_AUTHORIZATION")


async def test_machine_principal_from_client_certificate(platform):
    stub = auth_pb2_grpc.AuthServiceStub(platform.municipality("131016"))
    me = await stub.WhoAmI(auth_pb2.WhoAmIRequest())
    assert (me.kind, me.role, me.machine_id) == (auth_pb2.CALLER_KIND_MACHINE, "municipality", "131016")
    anonymous = await auth_pb2_grpc.AuthServiceStub(platform.channel()).WhoAmI(auth_pb2.WhoAmIRequest())
    assert anonymous.kind == auth_pb2.CALLER_KIND_ANONYMOUS
