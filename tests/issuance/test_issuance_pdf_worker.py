"""PDFs rendered in the worker process (ONESTOP_PDF_WORKERS=1, what a served platform does): the
documents are the same as inline ones, the blobs are stored, and a lost worker falls back to inline
rendering without losing a transaction."""

from __future__ import annotations

import os
import signal

import pytest


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
    workers = desk.renderer.processes
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
    for process in desk.renderer.processes:
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
    # After the pause (here: made to have passed), the next kiosk to connect starts a new pool.
    assert desk.renderer._restart_at is not None and desk.renderer.restarts == 0
    desk.renderer._restart_at = 0.0
    fourth = await kiosk(served, "k-d").transact(card, "1234", order())
    assert fourth.ok and desk.renderer.offloaded and desk.renderer.restarts == 1
    assert fourth.documents[0].verification_code in pdf_text(fourth.documents[0].pdf)
    assert desk.renderer._pause == 2 * desk.renderer.RESTART_AFTER_S  # the next breakage waits longer


def test_worker_exits_when_its_server_process_is_killed(tmp_path):
    """A server killed outright never shuts its PDF worker down: the worker notices and exits."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = tmp_path / "server_like.py"
    script.write_text(
        "import asyncio, sys\n"
        "from datetime import datetime, timezone\n"
        "from server.issuance.pdf import BlobStore, CertificateContent\n"
        "from server.issuance.pdf_workers import Renderer\n"
        "async def main():\n"
        "    renderer = Renderer(BlobStore(sys.argv[1]), 1)\n"
        "    renderer.start()\n"
        "    content = CertificateContent('t', 'm', 'l', 's', 'c', datetime.now(timezone.utc))\n"
        "    await asyncio.wait_for(renderer.render_and_store([content]), 60)\n"
        "    assert renderer.offloaded\n"
        "    print(*[p.pid for p in renderer.processes], flush=True)\n"
        "    sys.stdin.read()\n"
        "if __name__ == '__main__':\n"
        "    asyncio.run(main())\n")
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{repo / 'gen'}:{repo}"}
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path / "blobs")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=env, text=True)
    try:
        worker = int(parent.stdout.readline())
        assert Path(f"/proc/{worker}").exists()
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        alive = Path(f"/proc/{worker}/stat").exists() and Path(f"/proc/{worker}/stat").read_text().split()[2] != "Z"
        assert not alive, "the PDF worker outlived its server"
    finally:
        if parent.poll() is None:
            parent.kill()


async def test_many_first_requests_at_once_share_the_workers_one_stream(tmp_path):
    """Fifty kiosks paying at once as the server starts: each request is answered with its own PDF,
    the worker stays up, nothing is rendered inline (a stream opened per caller once mixed them)."""
    import asyncio
    from datetime import datetime, timezone

    from server.issuance.pdf import BlobStore, CertificateContent
    from server.issuance.pdf_workers import Renderer

    renderer = Renderer(BlobStore(tmp_path / "blobs"), 1)
    renderer.start()
    try:
        contents = [CertificateContent("住民票の写し", "東京都千代田区", "千代田区長", f"131016-2026-{i:07d}",
                                       f"CODE-{i:04d}-AAAA-BBBB", datetime(2026, 12, 3, tzinfo=timezone.utc))
                    for i in range(50)]
        answers = await asyncio.wait_for(
            asyncio.gather(*(renderer.render_and_store([c]) for c in contents)), 120)
        assert renderer.offloaded and all(p.is_alive() for p in renderer.processes)
        for content, [(data, sha)] in zip(contents, answers):
            assert content.serial in pdf_text(data) and renderer.blobs.get(sha) == data
    finally:
        renderer.close()
    assert not renderer.offloaded
