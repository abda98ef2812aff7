"""The card trust in force: configured anchors plus the newest CRL per issuer.

CRLs received through any server process are stored in the database; each process notices a newer
one before verifying a card, so a revocation takes effect everywhere at once.
"""

from __future__ import annotations

from server.auth import store
from server.crypto.jpki import CardTrust
from server.db import Database, Tx


class TrustStore:
    def __init__(self, base: CardTrust, db: Database) -> None:
        self._base = base
        self._trust = base
        self._db = db
        self._versions: dict[str, int] = {}

    @property
    def last(self) -> CardTrust:
        """The trust as last loaded, without asking the database (for `CardTrust.warm` only: a
        verdict needs `current`)."""
        return self._trust

    async def current(self, tx: Tx | None = None) -> CardTrust:
        """The trust to verify with now (reloads CRLs when another process stored a newer one).

        Inside a write transaction pass `tx`: the CRLs are then read under the same lock that
        SubmitRevocationList takes, so a revocation is either seen or committed after this use."""
        versions = await store.crl_versions(tx if tx is not None else self._db)
        if versions == self._versions:
            return self._trust
        if tx is not None:
            return self._reload(versions, await store.crls(tx))
        async with self._db.read() as snapshot:
            versions = await store.crl_versions(snapshot)
            ders = await store.crls(snapshot)
        return self._reload(versions, ders)

    async def held(self, tx: Tx) -> CardTrust | None:
        """The trust in force, read under the write lock `tx` holds (so a revocation is either seen
        or committed after this use); None when a CRL was stored since it was last loaded: load it
        with `current()` outside the lock, then ask again."""
        versions = await store.crl_versions(tx)
        return self._trust if versions == self._versions else None

    def _reload(self, versions: dict[str, int], ders: list[bytes]) -> CardTrust:
        trust = self._base
        for der in ders:
            trust = trust.with_crl(der)
        self._trust, self._versions = trust, versions
        return trust
