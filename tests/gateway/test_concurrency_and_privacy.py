"""Several phones at once through one gateway; what the gateway logs (ids and codes, nothing personal)."""

from __future__ import annotations

import asyncio
import io
import logging

from mobile_stub.photos import jpeg_with_gps
from server.logs import JsonFormatter
from server.testing import PIN, holder
from tests.gateway.conftest import add_resident

PHONES = 5


async def test_five_phones_sign_in_draft_and_upload_at_once_each_seeing_only_their_own(platform, served):
    residents = [await add_resident(platform, holder(f"住民 {i}番", birth_date=holder().birth_date))
                 for i in range(PHONES)]
    photos = [jpeg_with_gps(320 + 16 * i, 240) for i in range(PHONES)]

    async def one(index: int):
        resident_id, card = residents[index]
        async with served.phone(card, base_url=served.base_url) as phone:
            session = await phone.sign_in()
            assert session["residentId"] == resident_id
            application = await phone.create_child_allowance_claim()
            reply = await phone.attach_photo(application["applicationId"], photo=photos[index])
            mine = await phone.list()
            return resident_id, application["applicationId"], reply["attachment"]["sha256"], mine

    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(PHONES))), 120)
    assert len({app_id for _, app_id, _, _ in results}) == PHONES
    assert len({sha for _, _, sha, _ in results}) == PHONES
    for resident_id, app_id, _, mine in results:
        assert [a["applicationId"] for a in mine["applications"]] == [app_id]
        assert mine["applications"][0]["residentId"] == resident_id
    await served.client.aclose()


async def test_gateway_logs_carry_ids_and_codes_but_no_personal_data(platform, gateway, resident):
    _, card = resident
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        async with gateway.phone(card) as phone:
            session = await phone.sign_in()
            application = await phone.create_child_allowance_claim()
            await phone.attach_photo(application["applicationId"])
            await phone.client.get("/v1/procedures", params={"keyword": "山田 花子"})
            await phone.client.get("/v1/me", headers={**phone._headers(), "x-request-id": "privacy-1"})
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    text = stream.getvalue()
    gateway_lines = [line for line in text.splitlines() if '"onestop.gateway"' in line]
    assert gateway_lines, "the gateway logged nothing"
    assert any('"privacy-1"' in line and '"status":200' in line for line in gateway_lines)
    for secret in (session["accessToken"], session["refreshToken"], card.holder.name, "山田", "花子",
                   card.holder.address, card.holder.birth_date.isoformat(), "Bearer", f'"{PIN}"'):
        assert secret not in text, f"{secret!r} reached the logs"
