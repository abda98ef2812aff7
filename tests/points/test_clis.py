"""The partner and shop CLIs against a running platform (run in a thread: they use blocking gRPC)."""

from __future__ import annotations

import asyncio
import re

from click.testing import CliRunner
from onestop.points.v1 import points_pb2 as pb

from clients.partner.__main__ import cli as partner_cli
from clients.shop.__main__ import cli as shop_cli

from .kit import LG, Kit, rid


async def test_partner_converts_and_shop_registers_authorizes_captures(platform):
    kit = Kit(platform)
    hanako = await kit.resident()
    await kit.operator.SetPartnerRate(pb.SetPartnerRateRequest(request_id=rid(), partner_id="air-co", rate_milli=1000))
    await kit.anon.BindPartnerAccount(pb.BindPartnerAccountRequest(
        request_id=rid(), partner_id="air-co", member_account="JL-1", card=await kit.present(hanako.card)),
        metadata=hanako.md)
    await kit.grant(hanako, 500)
    base = ["--target", platform.server.target(machine=True), "--pki", str(platform.pki.root)]
    shop = base + ["--shop", "cli-lib", "--lg", LG, "--kind", "library"]
    card = str(hanako.card.path)
    runner = CliRunner()

    async def run(cli, args):
        result = await asyncio.to_thread(runner.invoke, cli, args)
        return result.exit_code, result.output

    code, out = await run(partner_cli, base + ["--partner", "air-co", "convert", "JL-1", "120", "--request-id", "c-1"])
    assert code == 0 and "120 municipal points held until" in out, out
    code, again = await run(partner_cli, base + ["--partner", "air-co", "convert", "JL-1", "120", "--request-id", "c-1"])
    assert again.split(":")[0] == out.split(":")[0]  # a retry answers with the same conversion
    code, out = await run(partner_cli, base + ["--partner", "air-co", "convert", "NOPE", "5"])
    assert code == 1 and "NOT_FOUND" in out and "ACCOUNT_NOT_BOUND" in out

    code, out = await run(shop_cli, shop + ["register", "--card", card, "--pin", "1234", "--member-number", "L-9"])
    assert code == 0 and "member L-9 (library)" in out, out
    code, out = await run(shop_cli, shop + ["lookup", "--card", card, "--pin", "1234"])
    assert code == 0 and out.strip() == "member L-9", out
    code, out = await run(shop_cli, shop + ["authorize", "--card", card, "--pin", "1234", "--amount", "200"])
    assert code == 0 and "300 still available" in out, out
    hold_id = re.search(r"hold (\S+):", out).group(1)
    code, out = await run(shop_cli, shop + ["capture", hold_id])
    assert code == 0 and "captured 200 points" in out, out
    code, out = await run(shop_cli, shop + ["void", hold_id])
    assert code == 1 and "ALREADY_CAPTURED" in out, out
    code, out = await run(shop_cli, shop + ["authorize", "--card", card, "--pin", "1234", "--amount", "301"])
    assert code == 1 and "INSUFFICIENT_FUNDS" in out, out
    balances = await kit.balances(hanako)
    assert balances[(pb.ACCOUNT_KIND_REGULAR, LG, "")] == (300, 0, 300)
    assert balances[(pb.ACCOUNT_KIND_HOLDING, "", "")] == (120, 0, 120)
