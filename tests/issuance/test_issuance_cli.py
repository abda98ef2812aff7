"""`python -m clients.kiosk transact` against a running server, as an operator would type it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from server.testing import holder
from tests.issuance.kit import add_resident, money

REPO = Path(__file__).resolve().parents[2]


async def test_cli_runs_one_transaction(platform, tmp_path):
    _, card = await add_resident(platform, holder())
    out = tmp_path / "printed"
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'gen'}:{REPO}"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clients.kiosk", "transact", "--target", platform.server.target(machine=True),
        "--pki-dir", str(platform.pki.root), "--kiosk-id", "k-cli", "--operator", "lawson",
        "--card", str(card.path), "--pin", "1234", "--type", "resident_record", "--copies", "2",
        "--out", str(out), cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    summary = json.loads(stdout)
    assert summary["refusal"] is None and summary["printed"] == [1, 2] and summary["total_yen"] == 600
    assert sorted(p.stem for p in out.glob("*.pdf")) == sorted(summary["serials"])
    assert "山田" not in stdout.decode()  # no personal data in the summary
    assert await money(platform) == {"documents": {"printed": 2}, "charges": {"posted": (2, 600)},
                                     "fee_lines": (2, 246)}


async def test_cli_defaults_to_the_mtls_listener_and_prints_a_refusal_as_one_line(platform):
    from clients.kiosk.__main__ import transact

    assert next(p for p in transact.params if p.name == "target").default == "127.0.0.1:50052"
    _, card = await add_resident(platform, holder())
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'gen'}:{REPO}"}
    process = await asyncio.create_subprocess_exec(  # the resident listener: no client certificate asked
        sys.executable, "-m", "clients.kiosk", "transact", "--target", platform.server.target(machine=False),
        "--pki", str(platform.pki.root), "--card", str(card.path), "--pin", "1234",
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1 and stdout == b""
    assert "UNAUTHENTICATED" in stderr.decode() and "Traceback" not in stderr.decode()
    assert await money(platform) == {"documents": {}, "charges": {}, "fee_lines": (0, 0)}
