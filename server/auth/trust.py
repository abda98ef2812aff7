"""The card trust in force: configured anchors plus the newest CRL per issuer.

CRLs received through any server process are stored in the database; each process notices a newer
one before verifying a card, so a revocation takes effect everywhere at once.
"""

from __future__ import annotations

from server.auth import store
from server.crypto.jpki import CardTrust
from server.db import Database


class TrustStore:
    def __init__(self, base: CardTrust, db: Database) -> None:
        self._base = base
        self._trust = base
        self._db = db
        self._versions: dict[str, int] = {}

    async def current(self) -> CardTrust:
        """The trust to verify with now (reloads CRLs when another process stored a newer one)."""
        versions = await store.crl_versions(self._db)
        if versions == self._versions:
            return self._trust
        async with self._db.read() as tx:
            versions = await store.crl_versions(tx)
            ders = await store.crls(tx)
        trust = self._base
        for der in ders:
            trust = trust.with_crl(der)
        self._trust, self._versions = trust, versions
        return trust
