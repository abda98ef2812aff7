"""The officer's CLI against a running server (the CLI is synchronous: it runs in a thread)."""

import asyncio
import json
from datetime import date

from click.testing import CliRunner

from clients.notices.__main__ import cli
from tests.notification.support import LG, add_person


async def _run(platform, *args: str):
    runner = CliRunner()
    base = ["--target", platform.server.target(machine=True), "--pki", str(platform.settings.pki_dir), "--lg", LG, "--timeout", "20"]
    return await asyncio.to_thread(runner.invoke, cli, [*base, *args])


async def test_cli_sends_shows_and_reports_refusals(platform):
    await add_person(platform, "住民", date(1980, 1, 1))
    sent = await _run(platform, "send", "--all", "--title", "窓口", "--body", "{name} 様 {deadline}まで",
                      "--field", "deadline=1月3日")
    assert sent.exit_code == 0, sent.output
    notice = json.loads(sent.output)["notice"]
    assert notice["delivered_count"] == "1"
    shown = await _run(platform, "show", notice["notice_id"])
    assert json.loads(shown.output)["notice"]["status"] == "NOTICE_STATUS_SENT"
    missing = await _run(platform, "send", "--all", "--title", "t", "--body", "{deadline}")
    assert missing.exit_code == 1
    assert "TEMPLATE_FIELD_MISSING" in missing.output and "fields.deadline" in missing.output
    usage = await _run(platform, "send", "--title", "t", "--body", "b")
    assert usage.exit_code == 2
