"""The storage layer on its own: the single writer survives cancellation; migrations apply once."""

from __future__ import annotations

import asyncio

from server.db import Database


async def test_writer_is_usable_after_a_cancel_while_waiting_for_the_lock(tmp_path):
    path = tmp_path / "x.db"
    holder, waiter = await Database(path).open(), await Database(path).open()
    try:
        async with holder.write() as tx:
            await tx.execute("INSERT INTO municipalities (code, prefecture, name, name_kana) VALUES ('131016','','','')")
            # The other process's writer now waits on SQLite's lock; cancel it mid-BEGIN.
            blocked = asyncio.ensure_future(_write_one(waiter, "011002"))
            await asyncio.sleep(0.2)
            blocked.cancel()
        # The lock is free again: the cancelled BEGIN completes, and is undone.
        try:
            await blocked
        except asyncio.CancelledError:
            pass
        # The cancelled process can still write: its writer is not stuck inside a transaction.
        await asyncio.wait_for(_write_one(waiter, "012025"), timeout=30)
        rows = await waiter.query("SELECT code FROM municipalities ORDER BY code")
        assert [r["code"] for r in rows] == ["012025", "131016"]
    finally:
        await holder.close()
        await waiter.close()


async def _write_one(db: Database, code: str) -> None:
    async with db.write() as tx:
        await tx.execute("INSERT INTO municipalities (code, prefecture, name, name_kana) VALUES (?,'','','')", (code,))


async def test_migrations_apply_once_across_opens(tmp_path):
    first = await Database(tmp_path / "m.db").open()
    versions = await first.query("SELECT count(*) FROM schema_migrations")
    await first.close()
    second = await Database(tmp_path / "m.db").open()
    assert (await second.query("SELECT count(*) FROM schema_migrations"))[0][0] == versions[0][0]
    assert await second.migrate(__import__("server.db", fromlist=["x"]).discover_migrations()) == []
    await second.close()
