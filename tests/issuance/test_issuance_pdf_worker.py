"""PDFs rendered in the worker process (ONESTOP_PDF_WORKERS=1, what a served platform does): the
documents are the same as inline ones, the blobs are stored, and a lost worker falls back to inline
rendering without losing a transaction."""

from __future__ import annotations

import os
import signal

import pytest

from onestop.issuance.v1 import issuance_pb2 as pb

from server.issuance.pdf import STATS
from server.testing import holder, run_platform
from tests.issuance.kit import add_resident, kiosk, money, order, pdf_text


@pytest.fixture
async def served(tmp_path, pki_template, monkeypatch):
    monkeypatch.setenv("ONESTOP_PDF_WORKERS", "1")
    async with run_platform(tmp_path, pki_template=pki_template) as running:
        yield running


async def test_documents_rendered_in_the_worker_process(served):
    _, card = await add_resident(served, holder("山田 花子"))
    desk = served.server.platform.services["kiosk_desk"]
    before = STATS.count
    result = await kiosk(served, "k-w").transact(card, "1234", order(copies=2))
    assert result.ok, result.refusal
    assert desk.renderer.offloaded
    workers = list(desk.renderer._pool._processes.values())
    assert len(workers) == 1 and workers[0].pid != os.getpid() and workers[0].is_alive()
    for doc in result.documents:
        text = pdf_text(doc.pdf)
        assert doc.serial in text and doc.verification_code in text and "山田 花子" in text
        assert desk.blobs.get(doc.pdf_sha256) == doc.pdf  # stored by the worker, read back for replays
    assert STATS.count == before + 2  # the worker's rendering time is counted here
    assert await money(served) == {"documents": {"printed": 2}, "charges": {"posted": (2, 600)},
                                   "fee_lines": (2, 246)}


async def test_a_lost_worker_falls_back_to_inline_rendering(served):
    _, card = await add_resident(served, holder())
    desk = served.server.platform.services["kiosk_desk"]
    first = await kiosk(served, "k-a").transact(card, "1234", order())
    assert first.ok and desk.renderer.offloaded
    for process in list(desk.renderer._pool._processes.values()):
        os.kill(process.pid, signal.SIGKILL)
        process.join(10)
    second = await kiosk(served, "k-b").transact(card, "1234", order())
    assert second.ok, second.refusal
    assert not desk.renderer.offloaded
    doc = second.documents[0]
    assert doc.verification_code in pdf_text(doc.pdf)
    third = await kiosk(served, "k-c").transact(card, "1234", order())
    assert third.ok
    assert (await money(served))["documents"] == {"printed": 3}
