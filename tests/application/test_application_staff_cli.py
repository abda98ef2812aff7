"""The staff CLI drives a real server: queue, show, accept, request-correction, decide."""

from __future__ import annotations

import asyncio
import hashlib
import json

from click.testing import CliRunner
from onestop.application.v1 import application_pb2 as pb

from clients.staff.__main__ import cli
from tests.application.support import LG, OTHER_LG, child_allowance_form


async def run_cli(platform, *args: str, lg: str = LG):
    """Invoke the CLI in a worker thread (it is synchronous; the server runs on this loop)."""
    runner = CliRunner()
    argv = ["--target", platform.server.target(machine=True), "--pki", str(platform.pki.root), "--lg", lg, *args]
    return await asyncio.to_thread(runner.invoke, cli, argv, catch_exceptions=False)


async def test_officer_processes_an_application_with_the_cli(platform, applicant):
    application = await applicant.submitted()
    app_id = application.application_id

    result = await run_cli(platform, "--json", "queue", "--status", "submitted")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [(r["application_id"], r["version"], r["status"]) for r in rows] == [(app_id, application.version,
                                                                                  "submitted")]

    result = await run_cli(platform, "show", app_id)
    assert result.exit_code == 0, result.output
    assert "health_insurance" in result.output and "image/jpeg" in result.output and "submitted" in result.output

    attachment = application.attachments[0]
    target = platform.settings.data_dir / "downloaded.jpg"
    result = await run_cli(platform, "download", app_id, attachment.attachment_id, "-o", str(target))
    assert result.exit_code == 0, result.output
    assert hashlib.sha256(target.read_bytes()).hexdigest() == attachment.sha256

    result = await run_cli(platform, "accept", app_id, "--version", str(application.version), "--note", "受付")
    assert result.exit_code == 0, result.output
    assert f"{app_id} is now accepted (version {application.version + 1})" in result.output

    # A stale version is refused with the reason shown, and nothing changes.
    result = await run_cli(platform, "decide", app_id, "--version", str(application.version), "--approve",
                           "--result", "x")
    assert result.exit_code == 1 and "ABORTED" in result.output and "VERSION_CONFLICT" in result.output

    result = await run_cli(platform, "request-correction", app_id, "--version", str(application.version + 1),
                           "--field", "form.children[1].name_kana=フリガナを記入してください",
                           "--attachment", "health_insurance=画像が不鮮明です", "--message", "ご確認ください")
    assert result.exit_code == 0, result.output
    shown = await applicant.get(app_id)
    assert shown.status == pb.APPLICATION_STATUS_CORRECTION_REQUESTED
    assert [(c.field_path, c.attachment_slot, c.reason) for c in shown.corrections] == [
        ("form.children[1].name_kana", "", "フリガナを記入してください"), ("", "health_insurance", "画像が不鮮明です")]

    # The resident answers; the officer accepts again and decides.
    form = child_allowance_form()
    form["children"][1]["name_kana"] = "ヤマダ ジロウ"
    await applicant.stub.UpdateDraft(pb.UpdateDraftRequest(request_id="fix-1", application_id=app_id,
                                                           version=shown.version, form_json=json.dumps(form)),
                                     metadata=applicant.md)
    resubmitted = (await applicant.sign_and_submit(app_id)).application
    result = await run_cli(platform, "accept", app_id, "--version", str(resubmitted.version))
    assert result.exit_code == 0, result.output
    result = await run_cli(platform, "--json", "decide", app_id, "--version", str(resubmitted.version + 1),
                           "--approve", "--result", "月額10,000円で認定しました")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["status"] == "decided"
    final = await applicant.get(app_id)
    assert (final.decision, final.result_text) == (pb.DECISION_APPROVED, "月額10,000円で認定しました")
    assert [h.action for h in final.history][-4:] == ["updated", "resubmitted", "accepted", "decided"]

    result = await run_cli(platform, "show", app_id)
    assert "decision approved: 月額10,000円で認定しました" in result.output


async def test_cli_of_another_municipality_is_refused(platform, applicant):
    application = await applicant.submitted()
    await platform.add_municipality(OTHER_LG, "大阪市", "大阪府")
    result = await run_cli(platform, "accept", application.application_id, "--version", str(application.version),
                           lg=OTHER_LG)
    assert result.exit_code == 1 and "PERMISSION_DENIED" in result.output and "OTHER_MUNICIPALITY" in result.output
    result = await run_cli(platform, "queue", lg=OTHER_LG)
    assert result.exit_code == 0 and result.output == ""
    result = await run_cli(platform, "request-correction", application.application_id, "--version", "1",
                           "--field", "no-equals-sign")
    assert result.exit_code == 2 and "NAME=REASON" in result.output
