"""`python -m clients.staff`: a municipal officer's view of online applications.

    python -m clients.staff --pki var/pki --lg 131016 queue --status submitted
    python -m clients.staff --pki var/pki --lg 131016 show app_...
    python -m clients.staff --pki var/pki --lg 131016 download app_... att_... -o photo.jpg
    python -m clients.staff --pki var/pki --lg 131016 accept app_... --version 3
    python -m clients.staff --pki var/pki --lg 131016 request-correction app_... --version 4 \\
        --field form.children[0].birth_date="生年月日を確認してください" --attachment health_insurance="不鮮明"
    python -m clients.staff --pki var/pki --lg 131016 decide app_... --version 5 --approve --result "認定"

Connects over mTLS as the municipality LG with its certificate from the development PKI. Refusals
print the gRPC code, the reason and the fields at fault, and exit with status 1.
"""

from __future__ import annotations

import json
import sys
from datetime import timezone
from pathlib import Path

import click
import grpc
from onestop.application.v1 import application_pb2 as pb
from onestop.application.v1 import application_pb2_grpc as pb_grpc

from clients.connect import describe, machine_channel
from server.crypto.machine import MachineIdentity
from server.ids import new_id

STATUSES = [name[len("APPLICATION_STATUS_"):].lower() for name in pb.ApplicationStatus.keys()
            if name != "APPLICATION_STATUS_UNSPECIFIED"]


def _status_name(number: int) -> str:
    return pb.ApplicationStatus.Name(number)[len("APPLICATION_STATUS_"):].lower()


def _when(stamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return stamp.ToDatetime(tzinfo=timezone.utc).isoformat(timespec="seconds")


class Staff:
    """A connected officer: the stub and the municipality it acts for."""

    def __init__(self, target: str, pki_dir: Path, lgcode: str, timeout: float) -> None:
        self.channel = machine_channel(target, pki_dir, MachineIdentity("municipality", lgcode, {}))
        self.stub = pb_grpc.ApplicationServiceStub(self.channel)
        self.lgcode = lgcode
        self.timeout = timeout

    def call(self, method: str, request):
        try:
            return getattr(self.stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise click.ClickException(describe(error)) from None




def _summary(application: pb.Application) -> dict:
    return {
        "application_id": application.application_id, "procedure": application.procedure_code,
        "title": application.procedure_title, "status": _status_name(application.status),
        "version": application.version, "submitted_at": _when(application.submitted_at),
        "last_submitted_at": _when(application.last_submitted_at),
    }


def _detail(application: pb.Application) -> dict:
    out = _summary(application)
    out.update(
        resident_id=application.resident_id, accepted_at=_when(application.accepted_at),
        decided_at=_when(application.decided_at),
        decision=pb.Decision.Name(application.decision)[len("DECISION_"):].lower() if application.decision else "",
        result_text=application.result_text,
        form=json.loads(application.form_json or "{}"),
        attachments=[{"attachment_id": a.attachment_id, "slot": a.slot, "content_type": a.content_type,
                      "size": a.size, "sha256": a.sha256, "filename": a.filename} for a in application.attachments],
        corrections=[{"field_path": c.field_path, "attachment_slot": c.attachment_slot, "reason": c.reason}
                     for c in application.corrections],
        history=[{"at": _when(h.at), "actor": h.actor, "action": h.action, "status": _status_name(h.status),
                  "version": h.version, "reason": h.reason} for h in application.history],
    )
    return out


def _emit(ctx: click.Context, data: dict, text: str) -> None:
    if ctx.obj["json"]:
        click.echo(json.dumps(data, ensure_ascii=False, sort_keys=True))
    else:
        click.echo(text)


@click.group()
@click.option("--target", default="127.0.0.1:50052", show_default=True,
              help="the server's mTLS listener for machine principals")
@click.option("--pki", "pki_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="development PKI directory (platform CA and machine certificates)")
@click.option("--lg", "lgcode", required=True, help="the municipality (6-digit code) the officer works for")
@click.option("--json", "as_json", is_flag=True, help="print JSON (one object per line) instead of text")
@click.option("--timeout", default=30.0, show_default=True, help="seconds per call")
@click.pass_context
def cli(ctx: click.Context, target: str, pki_dir: Path, lgcode: str, as_json: bool, timeout: float) -> None:
    """A municipal officer's tools for online applications (ApplicationService)."""
    if not (len(lgcode) == 6 and lgcode.isdigit()):
        raise click.BadParameter("a 6-digit local government code", param_hint="--lg")
    ctx.obj = {"staff": Staff(target, pki_dir, lgcode, timeout), "json": as_json}
    ctx.call_on_close(ctx.obj["staff"].channel.close)


@cli.command()
@click.option("--status", type=click.Choice(STATUSES), help="only applications in this state")
@click.option("--procedure", default="", help="only this procedure code")
@click.option("--page-size", default=20, show_default=True, type=click.IntRange(1, 500))
@click.option("--page-token", default="", help="continue from a previous page")
@click.option("--all", "all_pages", is_flag=True, help="follow every page (at most 100)")
@click.pass_context
def queue(ctx: click.Context, status: str | None, procedure: str, page_size: int, page_token: str,
          all_pages: bool) -> None:
    """The municipality's applications, oldest arrival first."""
    staff: Staff = ctx.obj["staff"]
    number = pb.ApplicationStatus.Value(f"APPLICATION_STATUS_{status.upper()}") if status else 0
    for _ in range(100 if all_pages else 1):
        page = staff.call("ListApplications", pb.ListApplicationsRequest(
            status=number, procedure_code=procedure, page_size=page_size, page_token=page_token))
        for application in page.applications:
            s = _summary(application)
            _emit(ctx, s, f"{s['application_id']}  v{s['version']:<3} {s['status']:<21} {s['submitted_at']}  "
                          f"{s['procedure']}")
        page_token = page.next_page_token
        if not page_token:
            break
    if page_token:
        _emit(ctx, {"next_page_token": page_token}, f"next page: --page-token {page_token}")


@cli.command()
@click.argument("application_id")
@click.pass_context
def show(ctx: click.Context, application_id: str) -> None:
    """One application with its form, attachments, open corrections and history."""
    staff: Staff = ctx.obj["staff"]
    application = staff.call("GetApplication", pb.GetApplicationRequest(application_id=application_id)).application
    d = _detail(application)
    lines = [f"{d['application_id']}  {d['title']} ({d['procedure']})",
             f"status {d['status']}  version {d['version']}  submitted {d['submitted_at']}"
             f"  accepted {d['accepted_at']}  decided {d['decided_at']}"]
    if d["decision"]:
        lines.append(f"decision {d['decision']}: {d['result_text']}")
    lines.append("form: " + json.dumps(d["form"], ensure_ascii=False, indent=2))
    lines.append("attachments:")
    lines += [f"  {a['attachment_id']}  {a['slot']:<20} {a['content_type']:<16} {a['size']:>9} bytes  "
              f"sha256 {a['sha256']}" for a in d["attachments"]] or ["  (none)"]
    if d["corrections"]:
        lines.append("corrections requested:")
        lines += [f"  {c['field_path'] or c['attachment_slot']}: {c['reason']}" for c in d["corrections"]]
    lines.append("history:")
    lines += [f"  v{h['version']:<3} {h['at']}  {h['actor']:<30} {h['action']:<20} {h['reason']}"
              for h in d["history"]]
    _emit(ctx, d, "\n".join(lines))


@cli.command()
@click.argument("application_id")
@click.argument("attachment_id")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="where to write the file")
@click.pass_context
def download(ctx: click.Context, application_id: str, attachment_id: str, output: Path) -> None:
    """Save one attachment of an application (checked against its sha256)."""
    import hashlib

    staff: Staff = ctx.obj["staff"]
    digest, size, meta = hashlib.sha256(), 0, None
    partial = output.with_name(output.name + ".part")
    try:
        with open(partial, "wb") as out:
            for message in staff.stub.DownloadAttachment(pb.DownloadAttachmentRequest(
                    application_id=application_id, attachment_id=attachment_id), timeout=staff.timeout):
                if message.WhichOneof("part") == "attachment":
                    meta = message.attachment
                else:
                    out.write(message.chunk)
                    digest.update(message.chunk)
                    size += len(message.chunk)
    except grpc.RpcError as error:
        partial.unlink(missing_ok=True)
        raise click.ClickException(describe(error)) from None
    if meta is None or digest.hexdigest() != meta.sha256 or size != meta.size:
        partial.unlink(missing_ok=True)
        raise click.ClickException("the download was incomplete or does not match its sha256")
    partial.replace(output)
    _emit(ctx, {"path": str(output), "content_type": meta.content_type, "size": size, "sha256": meta.sha256},
          f"saved {output} ({meta.content_type}, {size} bytes)")


def _done(ctx: click.Context, what: str, application: pb.Application) -> None:
    s = _summary(application)
    _emit(ctx, s, f"{what}: {s['application_id']} is now {s['status']} (version {s['version']})")


@cli.command()
@click.argument("application_id")
@click.option("--version", "version", required=True, type=int, help="the version you saw (from queue/show)")
@click.option("--note", default="", help="a note kept in the history")
@click.option("--request-id", default=None, help="reuse to retry safely (default: a new one)")
@click.pass_context
def accept(ctx: click.Context, application_id: str, version: int, note: str, request_id: str | None) -> None:
    """Record 受理 (acceptance) with the time of now."""
    staff: Staff = ctx.obj["staff"]
    reply = staff.call("AcceptApplication", pb.AcceptApplicationRequest(
        request_id=request_id or new_id("cli"), application_id=application_id, version=version, note=note))
    _done(ctx, "accepted", reply.application)


def _pairs(values: tuple[str, ...], option: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, sep, reason = value.partition("=")
        if not sep or not key or not reason:
            raise click.BadParameter(f"{value!r}: write NAME=REASON", param_hint=option)
        pairs.append((key, reason))
    return pairs


@cli.command("request-correction")
@click.argument("application_id")
@click.option("--version", "version", required=True, type=int, help="the version you saw (from queue/show)")
@click.option("--field", "fields", multiple=True, help="PATH=REASON, e.g. form.children[0].birth_date=...")
@click.option("--attachment", "attachments", multiple=True, help="SLOT=REASON, e.g. health_insurance=不鮮明")
@click.option("--message", default="", help="a message to the resident")
@click.option("--request-id", default=None, help="reuse to retry safely (default: a new one)")
@click.pass_context
def request_correction(ctx: click.Context, application_id: str, version: int, fields: tuple[str, ...],
                       attachments: tuple[str, ...], message: str, request_id: str | None) -> None:
    """Ask the resident to correct (補正) fields or attachments."""
    reasons = [pb.CorrectionReason(field_path=p, reason=r) for p, r in _pairs(fields, "--field")]
    reasons += [pb.CorrectionReason(attachment_slot=s, reason=r) for s, r in _pairs(attachments, "--attachment")]
    if not reasons:
        raise click.UsageError("give at least one --field or --attachment")
    staff: Staff = ctx.obj["staff"]
    reply = staff.call("RequestCorrection", pb.RequestCorrectionRequest(
        request_id=request_id or new_id("cli"), application_id=application_id, version=version, reasons=reasons,
        message=message))
    _done(ctx, "correction requested", reply.application)


@cli.command()
@click.argument("application_id")
@click.option("--version", "version", required=True, type=int, help="the version you saw (from queue/show)")
@click.option("--approve/--reject", "approve", required=True, help="the decision")
@click.option("--result", "result_text", required=True, help="the result the resident reads")
@click.option("--request-id", default=None, help="reuse to retry safely (default: a new one)")
@click.pass_context
def decide(ctx: click.Context, application_id: str, version: int, approve: bool, result_text: str,
           request_id: str | None) -> None:
    """Record the decision (approved or rejected, with the result)."""
    staff: Staff = ctx.obj["staff"]
    reply = staff.call("DecideApplication", pb.DecideApplicationRequest(
        request_id=request_id or new_id("cli"), application_id=application_id, version=version,
        decision=pb.DECISION_APPROVED if approve else pb.DECISION_REJECTED, result_text=result_text))
    _done(ctx, "decided", reply.application)


if __name__ == "__main__":
    sys.exit(cli())
