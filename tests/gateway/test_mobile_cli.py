"""The mobile stub's CLI runs its story against a real gateway over a socket."""

from __future__ import annotations

import asyncio

from click.testing import CliRunner
from onestop.application.v1 import application_pb2 as apb
from onestop.application.v1 import application_pb2_grpc as apb_grpc

from mobile_stub.__main__ import cli
from server.ids import new_id


async def test_the_cli_story_then_status_and_answer(platform, served, resident):
    _, card = resident
    runner = CliRunner()
    base = ["--base-url", served.base_url, "--card", str(card.path)]
    result = await asyncio.to_thread(runner.invoke, cli, base)
    assert result.exit_code == 0, result.output
    for step in ("1. sign in", "2. search", "3. fill", "4. photograph", "5. sign", "6. status"):
        assert step in result.output
    assert "APPLICATION_STATUS_SUBMITTED" in result.output
    app_id = result.output.strip().splitlines()[-1].split(": ")[1]

    staff = apb_grpc.ApplicationServiceStub(platform.municipality("131016"))
    current = (await staff.GetApplication(apb.GetApplicationRequest(application_id=app_id))).application
    await staff.RequestCorrection(apb.RequestCorrectionRequest(
        request_id=new_id("rq"), application_id=app_id, version=current.version,
        reasons=[apb.CorrectionReason(field_path="form.claimant.phone", reason="番号違い")]))

    shown = await asyncio.to_thread(runner.invoke, cli, [*base, "status", app_id])
    assert "APPLICATION_STATUS_CORRECTION_REQUESTED" in shown.output
    assert "form.claimant.phone: 番号違い" in shown.output
    answered = await asyncio.to_thread(runner.invoke, cli, [*base, "answer", app_id,
                                                            "--set", "claimant.phone=03-2222-3333"])
    assert answered.exit_code == 0, answered.output
    assert "APPLICATION_STATUS_RESUBMITTED" in answered.output
    again = (await staff.GetApplication(apb.GetApplicationRequest(application_id=app_id))).application
    assert '"03-2222-3333"' in again.form_json

    inbox = await asyncio.to_thread(runner.invoke, cli, [*base, "notices"])
    assert inbox.exit_code == 0, inbox.output
    assert "unread" in inbox.output

    wrong_pin = await asyncio.to_thread(runner.invoke, cli, [*base, "--pin", "9999", "status", app_id])
    assert wrong_pin.exit_code != 0
    await served.client.aclose()
