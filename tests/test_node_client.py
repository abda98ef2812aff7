"""An independent Node.js client (grpc-js + proto-loader on protos/ as they are) signs in and reads notices."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from server.testing import PIN, holder

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "clients" / "node" / "signin_and_read_notices.mjs"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (REPO / "node_modules" / "@grpc" / "grpc-js").exists(),
    reason="needs node and `npm install` (CI runs `make lint`, which installs them)",
)


async def run_node(platform, card_path: Path, pin: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "node", str(SCRIPT), "--target", platform.target, "--ca", str(platform.pki.ca_path),
        "--card", str(card_path), "--pin", pin,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode, out.decode(), err.decode()


async def test_node_client_signs_in_and_reads_own_notices(platform):
    resident_id, card = await platform.add_resident(holder())
    other_id, _ = await platform.add_resident(holder("他人 太郎", sex="1"))
    sink = platform.server.platform.services["notices"]
    async with platform.db.write() as tx:
        await sink.send_to_resident(tx, resident_id=resident_id, municipality_code="131016",
                                    title="乳幼児健診のお知らせ", body="3〜4か月児健診のご案内です。")
        await sink.send_to_resident(tx, resident_id=other_id, municipality_code="131016",
                                    title="他人宛て", body="見えてはいけない")
    code, out, err = await run_node(platform, card.path, PIN)
    assert code == 0, err
    reply = json.loads(out)
    assert reply["resident_id"] == resident_id and reply["municipality_code"] == "131016"
    assert [n["title"] for n in reply["notices"]] == ["乳幼児健診のお知らせ"]
    assert reply["unread_count"] == 1


async def test_node_client_wrong_pin_fails_without_signing(platform):
    _, card = await platform.add_resident(holder())
    code, _, err = await run_node(platform, card.path, "0000")
    assert code == 1 and "wrong PIN" in err
    async with platform.db.read() as tx:
        assert await tx.scalar("SELECT count(*) FROM sessions") == 0
