import pytest

from server.errors import NotFound
from server.testing import holder


async def test_sink_delivers_once_per_dedupe_key(platform):
    resident_id, _ = await platform.add_resident(holder())
    sink = platform.server.platform.services["notices"]
    async with platform.db.write() as tx:
        first = await sink.send_to_resident(tx, resident_id=resident_id, municipality_code="131016",
                                            title="受理しました", body="申請を受理しました。", dedupe_key="k1")
        again = await sink.send_to_resident(tx, resident_id=resident_id, municipality_code="131016",
                                            title="受理しました", body="申請を受理しました。", dedupe_key="k1")
    assert again == first
    async with platform.db.read() as tx:
        rows = await tx.all("SELECT notice_id, title FROM deliveries WHERE resident_id = ?", (resident_id,))
    assert [(r["notice_id"], r["title"]) for r in rows] == [(first, "受理しました")]


async def test_sink_rolls_back_with_the_callers_transaction(platform):
    resident_id, _ = await platform.add_resident(holder())
    sink = platform.server.platform.services["notices"]
    with pytest.raises(RuntimeError):
        async with platform.db.write() as tx:
            await sink.send_to_resident(tx, resident_id=resident_id, municipality_code="131016",
                                        title="t", body="b", dedupe_key="k2")
            raise RuntimeError("caller failed")
    async with platform.db.read() as tx:
        assert await tx.scalar("SELECT count(*) FROM notices WHERE dedupe_key = 'k2'") == 0


async def test_sink_refuses_unknown_resident(platform):
    sink = platform.server.platform.services["notices"]
    with pytest.raises(NotFound):
        async with platform.db.write() as tx:
            await sink.send_to_resident(tx, resident_id="res_nope", municipality_code="131016", title="t", body="b")
