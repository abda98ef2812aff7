"""Soak (slow): many residents submit at once while two officers race over the same queue."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from onestop.application.v1 import application_pb2 as pb
from onestop.application.v1 import application_pb2_grpc as pb_grpc

from server.ids import new_id
from tests.application.support import LG, jpeg_bytes, make_applicant

RESIDENTS = 12


@pytest.mark.slow
async def test_concurrent_submissions_and_racing_officers(platform):
    applicants = [await make_applicant(platform, f"住民 {i}") for i in range(RESIDENTS)]

    async def apply(i, person):
        draft = await person.draft()
        await person.upload(draft.application_id, jpeg_bytes(gps=True, color=(i * 20 % 256, 10, 10)))
        return (await person.sign_and_submit(draft.application_id)).application

    submitted = await asyncio.wait_for(asyncio.gather(*(apply(i, p) for i, p in enumerate(applicants))), 120)
    officers = [pb_grpc.ApplicationServiceStub(platform.municipality(LG)) for _ in range(2)]

    async def race(method, make_request):
        """Both officers try the same action on every application; exactly one may win each."""
        calls = [getattr(officer, method)(make_request(application))
                 for application in current for officer in officers]
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 120)
        wins = [r.application for r in results if not isinstance(r, Exception)]
        losses = [r for r in results if isinstance(r, Exception)]
        assert all(isinstance(e, grpc.aio.AioRpcError) and e.code() == grpc.StatusCode.ABORTED for e in losses)
        assert sorted(a.application_id for a in wins) == sorted(a.application_id for a in current)
        return wins

    current = submitted
    current = await race("AcceptApplication", lambda a: pb.AcceptApplicationRequest(
        request_id=new_id("rq"), application_id=a.application_id, version=a.version))
    current = await race("DecideApplication", lambda a: pb.DecideApplicationRequest(
        request_id=new_id("rq"), application_id=a.application_id, version=a.version,
        decision=pb.DECISION_APPROVED, result_text="認定しました"))
    assert {a.status for a in current} == {pb.APPLICATION_STATUS_DECIDED}

    async with platform.db.read() as tx:
        counts = await tx.all("SELECT action, COUNT(*) AS n FROM application_history GROUP BY action")
        shas = await tx.all("SELECT DISTINCT sha256 FROM application_attachments")
    assert {r["action"]: r["n"] for r in counts} == {
        "created": RESIDENTS, "attachment_added": RESIDENTS, "submitted": RESIDENTS, "accepted": RESIDENTS,
        "decided": RESIDENTS}
    blob_root = platform.settings.blob_dir
    files = {p.name for p in blob_root.rglob("*") if p.is_file() and p.parent.name != "tmp"}
    assert files == {r["sha256"] for r in shas}
    assert not any((blob_root / "tmp").iterdir())
