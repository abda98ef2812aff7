"""Sign-in challenges that cost no write until a card answers one.

A challenge id carries its own expiry and a random part, authenticated by a MAC with a key that
every server process on the database shares (`challenge_keys`: the first process to start makes
it), and the nonce is derived from the id with the same key. So any process checks any process's
challenge and recomputes its nonce without a lookup: an id the key did not make is NONCE_UNKNOWN,
one past its life NONCE_EXPIRED. Nobody without the key can make an id or work out a nonce.

Single use is the spent record: the sign-in's write transaction inserts the id into `challenges`
(its primary key), so a second use fails, in this process or another (NONCE_REPLAYED), and a refused
sign-in rolls the insert back, leaving the nonce usable. A spent record is kept an hour past the
challenge's expiry (after that the expiry alone refuses the id), then purged.

Why: storing each challenge when it was made cost a write transaction per sign-in, about a fifth of
a sign-in's server CPU (bench/core.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "chl_"
RANDOM_BYTES = 16
TAG_BYTES = 16
KEY_BYTES = 32
# `chl_` + expiry (12 hex digits of epoch ms: ids sort by expiry, so spent records are appended) +
# the random part + the tag (22 base64url characters each).
_BODY_LENGTH = len(PREFIX) + 12 + 22
ID_LENGTH = _BODY_LENGTH + 22
# Domain separation: the tag and the nonce are different functions of the same body.
_TAG_CONTEXT = b"onestop challenge id\x00"
_NONCE_CONTEXT = b"onestop challenge nonce\x00"


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class ChallengeKey:
    """Makes challenge ids and recognises them (the key is the one in the database)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < KEY_BYTES:
            raise ValueError("challenge key too short")
        self._secret = secret

    def make(self, expires_ms: int) -> tuple[str, bytes]:
        """A new (challenge id, nonce) pair that expires at `expires_ms`."""
        body = f"{PREFIX}{expires_ms:012x}{_b64(secrets.token_bytes(RANDOM_BYTES))}"
        return body + self._tag(body), self._nonce(body)

    def open(self, challenge_id: str) -> tuple[int, bytes] | None:
        """(expiry in epoch ms, nonce) of an id this key made; None for anything else."""
        if len(challenge_id) != ID_LENGTH or not challenge_id.isascii() or not challenge_id.startswith(PREFIX):
            return None
        body = challenge_id[:_BODY_LENGTH]
        if not hmac.compare_digest(self._tag(body), challenge_id[_BODY_LENGTH:]):
            return None
        return int(body[len(PREFIX):len(PREFIX) + 12], 16), self._nonce(body)

    def _tag(self, body: str) -> str:
        return _b64(hmac.digest(self._secret, _TAG_CONTEXT + body.encode("ascii"), hashlib.sha256)[:TAG_BYTES])

    def _nonce(self, body: str) -> bytes:
        return hmac.digest(self._secret, _NONCE_CONTEXT + body.encode("ascii"), hashlib.sha256)
