"""The storage layer on its own: the single writer survives cancellation; migrations apply once;
checkpoints happen off the loop."""

from __future__ import annotations

import asyncio

import pytest

from server.db import Database


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


async def test_commits_never_checkpoint_the_wal_and_the_checkpoint_task_does(tmp_path, monkeypatch):
    """COMMIT on the loop's thread must not copy the WAL into the file (an fsync that stalls every
    call); the checkpoint task does it off the loop."""
    import server.db as db_module

    monkeypatch.setattr(db_module, "CHECKPOINT_EVERY_S", 3600.0)
    db = await Database(tmp_path / "wal.db").open(migrations=[])
    try:
        async with db.write() as tx:
            await tx.execute("CREATE TABLE blobs (data BLOB)")
        before = (tmp_path / "wal.db").stat().st_size
        for _ in range(40):  # 5 MB: well past SQLite's automatic checkpoint at 1000 pages
            async with db.write() as tx:
                await tx.execute("INSERT INTO blobs VALUES (zeroblob(131072))")
        assert (tmp_path / "wal.db").stat().st_size == before
        assert (tmp_path / "wal.db-wal").stat().st_size > 5_000_000
    finally:
        await db.close()

    monkeypatch.setattr(db_module, "CHECKPOINT_EVERY_S", 0.02)
    db = await Database(tmp_path / "wal2.db").open(migrations=[])
    try:
        for _ in range(40):
            async with db.write() as tx:
                await tx.execute("CREATE TABLE IF NOT EXISTS blobs (data BLOB)")
                await tx.execute("INSERT INTO blobs VALUES (zeroblob(131072))")
        for _ in range(250):  # bounded: 5 s
            if (tmp_path / "wal2.db").stat().st_size > 5_000_000:
                break
            await asyncio.sleep(0.02)
        assert (tmp_path / "wal2.db").stat().st_size > 5_000_000
        async with db.read() as tx:
            assert await tx.scalar("SELECT count(*) FROM blobs") == 40
    finally:
        await db.close()


@pytest.mark.parametrize("cancels", [1, 2])
async def test_a_caller_cancelled_while_waiting_for_the_lock_leaves_the_writer_clean(tmp_path, cancels):
    """Cancelled (once, or again while the worker thread still waits for another process's lock):
    the wait stops at once, the cancellation arrives only when the thread is done, and no BEGIN
    succeeds later behind the caller's back; the writer goes on working."""
    path = tmp_path / "x.db"
    holder, waiter = await Database(path).open(), await Database(path).open()
    try:
        async with holder.write() as tx:
            await tx.execute("INSERT INTO municipalities (code, prefecture, name, name_kana) VALUES ('131016','','','')")
            blocked = asyncio.ensure_future(_write_one(waiter, "011002"))
            await asyncio.sleep(0.2)
            for _ in range(cancels):
                blocked.cancel()
                await asyncio.sleep(0)
            # Still holding the lock: the waiter's BEGIN was interrupted, not left waiting 30 s.
            done, _ = await asyncio.wait([blocked], timeout=5)
            assert done and blocked.cancelled()
            assert not waiter._writer.in_transaction
        await asyncio.wait_for(_write_one(waiter, "012025"), timeout=30)
        rows = await waiter.query("SELECT code FROM municipalities ORDER BY code")
        assert [r["code"] for r in rows] == ["012025", "131016"]
    finally:
        await holder.close()
        await waiter.close()


@pytest.mark.parametrize("level,number", [("NORMAL", 1), ("FULL", 2)])
async def test_the_sync_level_is_a_setting_on_every_connection(tmp_path, level, number):
    from server.config import Settings

    settings = Settings(data_dir=tmp_path, db_synchronous=level)
    db = await Database(settings.db_path, synchronous=settings.db_synchronous).open()
    try:
        async with db.read() as tx:
            assert await tx.scalar("PRAGMA synchronous") == number
        async with db.write() as tx:
            assert await tx.scalar("PRAGMA synchronous") == number
        await _write_one(db, "131016")
    finally:
        await db.close()
    with pytest.raises(ValueError, match="synchronous"):
        Database(tmp_path / "x.db", synchronous="OFF")
