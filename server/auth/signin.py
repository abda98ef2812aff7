"""Sign-in with the card and resident sessions: the rules, testable without a network.

Challenge (made without a write: `server.auth.challenges`) -> the card signs the nonce with its
authentication key -> verify certificate and signature -> spend the challenge (once, atomically, in
the shared database) -> card link -> session.
The kiosk stream uses `verify_card_response` too, so a card is checked one way everywhere.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from server.auth import store
from server.auth.challenges import ChallengeKey
from server.auth.trust import TrustStore
from server.authz import Resident
from server.clock import to_epoch_ms
from server.crypto.jpki import CardTrust, CertificateRejected, VerifiedCard, verify_signature
from server.db import Tx
from server.errors import FailedPrecondition, InvalidArgument, Unauthenticated
from server.ids import new_id
from server.platform import Platform

# A session is touched at most this often, so reads stay reads.
TOUCH_EVERY_MS = 60_000
PURGE_ONE_IN = 100
# Spent challenges are kept this long past their expiry (so is the timers' sweep: server.timers).
SPENT_KEPT_MS = 3_600_000


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Challenge:
    challenge_id: str
    nonce: bytes
    expires_at: datetime


@dataclass(frozen=True)
class CardSignIn:
    resident_id: str
    card: VerifiedCard


@dataclass(frozen=True)
class IssuedSession:
    session_id: str
    resident_id: str
    access_token: str
    refresh_token: str
    access_expires_ms: int  # epoch ms, as stored (and cheaper to put in a Timestamp than a datetime)
    absolute_expires_ms: int


class Authenticator:
    def __init__(self, platform: Platform, trust: TrustStore, challenge_key: ChallengeKey) -> None:
        self._p = platform
        self._trust = trust
        self._challenges = challenge_key

    @property
    def trust(self) -> TrustStore:
        return self._trust

    async def create_challenge(self) -> Challenge:
        expires = self._p.clock.now() + timedelta(seconds=self._p.settings.challenge_ttl_seconds)
        challenge_id, nonce = self._challenges.make(to_epoch_ms(expires))
        return Challenge(challenge_id, nonce, expires)

    async def verify_card_response(self, challenge_id: str, certificate: bytes, signature: bytes, *,
                                   then: Callable[[Tx, str], Awaitable[None]] | None = None) -> CardSignIn:
        """Check a card's answer to a challenge and spend the challenge; return the linked resident.

        `then(tx, resident_id)` runs in the same write transaction that spends the nonce, so what
        the sign-in opens (a session) exists exactly when the nonce is spent.
        """
        violations = [name for name, value in (("challenge_id", challenge_id), ("certificate", certificate),
                                                ("signature", signature)) if not value]
        if violations:
            raise InvalidArgument.field(violations[0], "required")
        now = self._p.clock.now()
        now_ms = to_epoch_ms(now)
        opened = self._challenges.open(challenge_id)
        if opened is None:
            raise Unauthenticated("NONCE_UNKNOWN", "unknown challenge")
        expires_ms, nonce = opened
        if expires_ms <= now_ms:
            raise Unauthenticated("NONCE_EXPIRED", "this challenge has expired; ask for a new one")

        async def spend(tx: Tx, trust: CardTrust) -> CardSignIn:
            if not await store.spend_challenge(tx, challenge_id, expires_ms, now_ms):
                raise Unauthenticated("NONCE_REPLAYED", "this challenge has been used; ask for a new one")
            # Keep the spent records few (an hour past expiry they are of no use), now and then only.
            if secrets.randbelow(PURGE_ONE_IN) == 0:
                await store.purge_challenges(tx, now_ms - SPENT_KEPT_MS)
            try:
                card = trust.verify(certificate, usage="auth", now=now)
                verify_signature(card, nonce, signature)
            except CertificateRejected as rejected:
                raise Unauthenticated(rejected.reason, _REFUSALS.get(rejected.reason, "card refused")) from None
            resident_id = await store.linked_resident(tx, card.issuer, card.serial_hex)
            if resident_id is None:
                raise FailedPrecondition("CARD_NOT_LINKED",
                                         "this card is not linked to a resident; ask the municipality")
            if then is not None:
                await then(tx, resident_id)
            return CardSignIn(resident_id, card)

        # Parse and chain checks need no lock (and are remembered per certificate); spending the
        # nonce, the CRL in force, the signature and the card link are all taken in the one write
        # transaction: a refusal rolls it back, so a refused attempt leaves the nonce unspent.
        self._trust.last.warm(certificate)
        for attempt in range(2):
            async with self._p.db.write() as tx:
                # Normally the CRLs held are those in force (one small read under the lock). Should
                # one have been stored since, it is parsed outside the lock and the transaction
                # taken again, where a CRL arriving in between is loaded under the lock.
                trust = await (self._trust.held(tx) if attempt == 0 else self._trust.current(tx))
                if trust is not None:
                    return await spend(tx, trust)
            await self._trust.current()
        raise AssertionError("unreachable: the second attempt loads the CRLs under the lock")

    async def sign_in(self, challenge_id: str, certificate: bytes, signature: bytes) -> IssuedSession:
        now_ms = to_epoch_ms(self._p.clock.now())
        settings = self._p.settings
        absolute_ms = now_ms + settings.session_absolute_seconds * 1000
        access_expires_ms = min(now_ms + settings.session_idle_seconds * 1000, absolute_ms)
        access, refresh = "osa_" + secrets.token_urlsafe(32), "osr_" + secrets.token_urlsafe(32)
        session_id = new_id("ses")

        async def open_session(tx: Tx, resident_id: str) -> None:
            await store.insert_session(tx, {
                "session_id": session_id,
                "resident_id": resident_id,
                "access_hash": token_hash(access),
                "refresh_hash": token_hash(refresh),
                "created_at_ms": now_ms,
                "last_seen_ms": now_ms,
                "access_expires_ms": access_expires_ms,
                "absolute_expires_ms": absolute_ms,
            })

        signed = await self.verify_card_response(challenge_id, certificate, signature, then=open_session)
        return IssuedSession(session_id, signed.resident_id, access, refresh, access_expires_ms, absolute_ms)

    @staticmethod
    def _check_session(row, now_ms: int, *, expires_key: str) -> None:
        if row is None:
            raise Unauthenticated("TOKEN_INVALID", "token not recognised")
        _check_times(row["ended_at_ms"], row["absolute_expires_ms"], row[expires_key], now_ms)

    async def resolve(self, access_token: str) -> Resident:
        """The resident behind a bearer token (used by the interceptor on every resident call)."""
        now_ms = to_epoch_ms(self._p.clock.now())
        row = await store.session_by_access(self._p.db, token_hash(access_token))
        if row is None:
            raise Unauthenticated("TOKEN_INVALID", "token not recognised")
        # One unpacking (the order store.session_by_access selects) rather than a lookup per name.
        session_id, resident_id, last_seen_ms, access_expires_ms, absolute_expires_ms, ended_at_ms, lgcode = row
        _check_times(ended_at_ms, absolute_expires_ms, access_expires_ms, now_ms)
        if now_ms - last_seen_ms >= TOUCH_EVERY_MS:
            idle_ms = self._p.settings.session_idle_seconds * 1000
            async with self._p.db.write() as tx:
                await store.touch_session(tx, session_id, now_ms, min(now_ms + idle_ms, absolute_expires_ms))
        return Resident(resident_id, session_id, lgcode)

    async def refresh(self, refresh_token: str) -> IssuedSession:
        if not refresh_token:
            raise InvalidArgument.field("refresh_token", "required")
        now = self._p.clock.now()
        now_ms = to_epoch_ms(now)
        access, refresh = "osa_" + secrets.token_urlsafe(32), "osr_" + secrets.token_urlsafe(32)
        async with self._p.db.write() as tx:
            row = await store.session_by_refresh(tx, token_hash(refresh_token))
            # A refresh token lives as long as the session itself.
            self._check_session(row, now_ms, expires_key="absolute_expires_ms")
            idle_ms = self._p.settings.session_idle_seconds * 1000
            access_expires_ms = min(now_ms + idle_ms, row["absolute_expires_ms"])
            if not await store.rotate_tokens(tx, row["session_id"], token_hash(refresh_token), token_hash(access),
                                             token_hash(refresh), now_ms, access_expires_ms):
                raise Unauthenticated("TOKEN_INVALID", "token not recognised")
        return IssuedSession(row["session_id"], row["resident_id"], access, refresh, access_expires_ms,
                             row["absolute_expires_ms"])

    async def sign_out(self, session_id: str) -> None:
        async with self._p.db.write() as tx:
            await store.end_session(tx, session_id, to_epoch_ms(self._p.clock.now()))

    async def submit_crl(self, tx, der: bytes) -> tuple[str, int, datetime]:
        """Store a CRL from a configured card CA (inside the caller's write transaction `tx`)."""
        if not der:
            raise InvalidArgument.field("crl", "required")
        try:
            crl = x509.load_der_x509_crl(der)
        except ValueError:
            raise InvalidArgument.field("crl", "not a DER-encoded X.509 CRL") from None
        trust = await self._trust.current()
        try:
            trust.with_crl(der)
        except CertificateRejected:
            raise FailedPrecondition("UNKNOWN_ISSUER", "the CRL is not signed by a configured card CA") from None
        issuer = crl.issuer.rfc4514_string()
        this_update = crl.last_update_utc
        if not await store.put_crl(tx, issuer, der, to_epoch_ms(this_update)):
            raise FailedPrecondition("CRL_OUTDATED", "a newer CRL from this issuer is already held")
        return issuer, len(list(crl)), this_update


def _check_times(ended_at_ms: int | None, absolute_expires_ms: int, expires_ms: int, now_ms: int) -> None:
    if ended_at_ms is not None:
        raise Unauthenticated("SESSION_ENDED", "this session has been signed out")
    if now_ms >= absolute_expires_ms or now_ms >= expires_ms:
        raise Unauthenticated("SESSION_EXPIRED", "this session has expired; sign in again")


_REFUSALS = {
    "UNKNOWN_ISSUER": "the card was not issued by a trusted card CA",
    "CERT_EXPIRED": "the card's certificate has expired",
    "CERT_NOT_YET_VALID": "the card's certificate is not valid yet",
    "CERT_REVOKED": "the card's certificate has been revoked",
    "WRONG_CERTIFICATE_USAGE": "sign in with the user-authentication certificate, not the signature certificate",
    "BAD_SIGNATURE": "the signature over the challenge does not verify",
    "MALFORMED_CERTIFICATE": "the certificate could not be read",
    "CRL_UNAVAILABLE": "no current revocation list for the card's issuer",
}
