"""The issue's story with both command lines over real sockets: phone CLI -> gateway -> server ->
staff CLI -> the phone's live notice stream -> phone CLI, ending in a decision the phone reads."""

from __future__ import annotations

import asyncio
import json

from click.testing import CliRunner

from clients.staff.__main__ import cli as staff_cli
from mobile_stub.__main__ import cli as phone_cli
from tests.gateway.test_notices_and_certificates import Events


async def staff(platform, *args: str) -> dict:
    argv = ["--target", platform.server.target(machine=True), "--pki", str(platform.pki.root), "--lg", "131016",
            "--json", *args]
    result = await asyncio.to_thread(CliRunner().invoke, staff_cli, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output.splitlines()[0])


async def phone(served, card, *args: str) -> str:
    argv = ["--base-url", served.base_url, "--card", str(card.path), *args]
    result = await asyncio.to_thread(CliRunner().invoke, phone_cli, argv)
    assert result.exit_code == 0, result.output
    return result.output


async def test_phone_cli_to_staff_cli_and_back_with_live_notices(platform, served, resident):
    _, card = resident
    output = await phone(served, card)  # the story: sign in ... submit
    app_id = output.strip().splitlines()[-1].split(": ")[1]

    async with served.phone(card, base_url=served.base_url) as app:
        await app.sign_in()
        latest = (await app.request("GET", "/v1/notices"))["latestCursor"]
        async with app.client.stream("GET", "/v1/notices/stream",
                                     headers={**app._headers(), "last-event-id": str(latest)}) as stream:
            events = Events(stream)
            queued = await staff(platform, "queue", "--status", "submitted")
            assert queued["application_id"] == app_id
            accepted = await staff(platform, "accept", app_id, "--version", str(queued["version"]))
            corrected = await staff(platform, "request-correction", app_id, "--version", str(accepted["version"]),
                                    "--field", "form.claimant.phone=電話番号を確認してください")
            notices = [json.loads(e["data"]) for e in await events.next(2)]  # 受理, then 補正
            assert all(n["category"] == "application" for n in notices), notices
            assert corrected["status"] == "correction_requested"

            status = await phone(served, card, "status", app_id)
            assert "form.claimant.phone: 電話番号を確認してください" in status
            answered = await phone(served, card, "answer", app_id, "--set", "claimant.phone=03-5555-6666")
            assert "APPLICATION_STATUS_RESUBMITTED" in answered

            shown = await staff(platform, "show", app_id)
            assert shown["form"]["claimant"]["phone"] == "03-5555-6666"
            accepted = await staff(platform, "accept", app_id, "--version", str(shown["version"]))
            await staff(platform, "decide", app_id, "--version", str(accepted["version"]), "--approve",
                        "--result", "認定しました（月額15,000円）")
            decided_notices = [json.loads(e["data"]) for e in await events.next(2)]  # 受理, then 決定
            assert decided_notices[-1]["category"] == "application"
    final = await phone(served, card, "status", app_id)
    assert "APPLICATION_STATUS_DECIDED" in final
    assert "DECISION_APPROVED 認定しました（月額15,000円）" in final
    await served.client.aclose()
