"""`python -m clients.notices`: send notices, schedule and cancel them, run the rules, read counts.

    python -m clients.notices --pki var/pki --lg 131016 send --all --title "窓口のご案内" \\
        --body "{name} 様\\n{deadline}まで窓口を休みます。" --field deadline=1月3日
    python -m clients.notices --pki var/pki --lg 131016 send --children 3-4 --title "3〜4か月児健診" \\
        --body "{name} 様 {child_name}さんの健診です。" --send-at 2026-12-10T09:00:00+09:00
    python -m clients.notices --pki var/pki --lg 131016 send --resident res_... --title "面談" --body "..." \\
        --choice mon=月曜午前 --choice wed=水曜午後
    python -m clients.notices --pki var/pki --lg 131016 show ntc_...      # status, delivered, read
    python -m clients.notices --pki var/pki --lg 131016 cancel ntc_...
    python -m clients.notices --pki var/pki --lg 131016 list
    python -m clients.notices --pki var/pki --lg 131016 run-rules [--as-of 2027-06-01]
    python -m clients.notices --pki var/pki --lg 131016 answers ntc_...

Connects over mTLS as the municipality with its development-PKI certificate. Output is one JSON
object per line. Refusals print the gRPC code, the reason and the fields at fault, and exit 1.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import click
import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp
from onestop.notification.v1 import notification_pb2 as pb
from onestop.notification.v1 import notification_pb2_grpc as pb_grpc

from clients.connect import describe, machine_channel
from server.crypto.machine import MachineIdentity
from server.ids import new_id

PROGRAMS = {"child_allowance": pb.BENEFIT_PROGRAM_CHILD_ALLOWANCE,
            "child_rearing_allowance": pb.BENEFIT_PROGRAM_CHILD_REARING_ALLOWANCE,
            "nursery": pb.BENEFIT_PROGRAM_NURSERY}




class Officer:
    def __init__(self, target: str, pki_dir: Path, lgcode: str, timeout: float) -> None:
        self.channel = machine_channel(target, pki_dir, MachineIdentity("municipality", lgcode, {}))
        self.stub = pb_grpc.NotificationServiceStub(self.channel)
        self.lgcode = lgcode
        self.timeout = timeout

    def call(self, method: str, request):
        try:
            reply = getattr(self.stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise click.ClickException(describe(error)) from None
        click.echo(json.dumps(MessageToDict(reply, preserving_proto_field_name=True), ensure_ascii=False))
        return reply


def _pairs(values: tuple[str, ...], option: str) -> list[tuple[str, str]]:
    out = []
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        out.append((key, value))
    return out


@click.group()
@click.option("--target", default="127.0.0.1:50052", show_default=True, help="the server's mTLS address")
@click.option("--pki", "pki_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="the development PKI directory (holds ca.pem and machine certificates)")
@click.option("--lg", "lgcode", required=True, help="the municipality (6-digit code) the officer works for")
@click.option("--timeout", default=300.0, show_default=True, help="seconds per call")
@click.pass_context
def cli(ctx: click.Context, target: str, pki_dir: Path, lgcode: str, timeout: float) -> None:
    ctx.obj = Officer(target, pki_dir, lgcode, timeout)


@cli.command()
@click.option("--title", required=True)
@click.option("--body", required=True, help="may use {name}, {child_name} (children segments), and --field keys")
@click.option("--category", default="general", show_default=True)
@click.option("--link", default="")
@click.option("--all", "everyone", is_flag=True, help="every resident of the municipality")
@click.option("--resident", "residents", multiple=True, help="a resident id (repeatable)")
@click.option("--children", default=None, help="parents of children aged MIN-MAX completed months, e.g. 3-4")
@click.option("--as-of", default="", help="the date the children's age is taken at (default: sending day)")
@click.option("--benefit", type=click.Choice(sorted(PROGRAMS)), default=None, help="households receiving it")
@click.option("--field", "fields", multiple=True, help="KEY=VALUE for a {KEY} placeholder (repeatable)")
@click.option("--choice", "choices", multiple=True, help="ID=LABEL: makes the notice a survey (repeatable)")
@click.option("--send-at", default=None, help="ISO time to send at (default: now)")
@click.option("--request-id", default=None, help="reuse to retry safely (default: a new one)")
@click.pass_obj
def send(officer: Officer, title, body, category, link, everyone, residents, children, as_of, benefit, fields,
         choices, send_at, request_id) -> None:
    """Send (or schedule) one notice."""
    chosen = [bool(everyone), bool(residents), children is not None, benefit is not None]
    if sum(chosen) != 1:
        raise click.UsageError("choose exactly one of --all, --resident, --children, --benefit")
    if everyone:
        audience = pb.Audience(all_residents=pb.Audience.AllResidents())
    elif residents:
        audience = pb.Audience(residents=pb.Audience.Residents(resident_ids=list(residents)))
    elif children is not None:
        low, sep, high = children.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise click.BadParameter("MIN-MAX months, e.g. 3-4", param_hint="--children")
        audience = pb.Audience(parents_of_children=pb.Audience.ParentsOfChildren(
            min_months=int(low), max_months=int(high or low), as_of=as_of))
    else:
        audience = pb.Audience(benefit_recipients=pb.Audience.BenefitRecipients(program=PROGRAMS[benefit]))
    request = pb.SendNoticeRequest(
        request_id=request_id or new_id("cli"), municipality_code=officer.lgcode, category=category, title=title,
        body=body, link=link, audience=audience, fields=dict(_pairs(fields, "--field")),
        survey_choices=[pb.SurveyChoice(choice_id=k, label=v) for k, v in _pairs(choices, "--choice")])
    if send_at:
        try:
            when = datetime.fromisoformat(send_at)
        except ValueError:
            raise click.BadParameter("an ISO time with its offset", param_hint="--send-at") from None
        if when.tzinfo is None:
            raise click.BadParameter("give the offset, e.g. +09:00", param_hint="--send-at")
        stamp = Timestamp()
        stamp.FromDatetime(when.astimezone(timezone.utc))
        request.send_at.CopyFrom(stamp)
    officer.call("SendNotice", request)


@cli.command()
@click.argument("notice_id")
@click.pass_obj
def show(officer: Officer, notice_id: str) -> None:
    """A notice with its delivered and read counts."""
    officer.call("GetNotice", pb.GetNoticeRequest(notice_id=notice_id))


@cli.command()
@click.argument("notice_id")
@click.option("--request-id", default=None)
@click.pass_obj
def cancel(officer: Officer, notice_id: str, request_id: str | None) -> None:
    """Cancel a scheduled notice before it goes."""
    officer.call("CancelNotice", pb.CancelNoticeRequest(request_id=request_id or new_id("cli"), notice_id=notice_id))


@cli.command(name="list")
@click.option("--page-size", default=20, show_default=True, type=click.IntRange(1, 500))
@click.option("--page-token", default="")
@click.pass_obj
def list_(officer: Officer, page_size: int, page_token: str) -> None:
    """The municipality's notices, newest first."""
    officer.call("ListSentNotices", pb.ListSentNoticesRequest(municipality_code=officer.lgcode, page_size=page_size,
                                                             page_token=page_token))


@cli.command(name="run-rules")
@click.option("--as-of", default="", help="YYYY-MM-DD (default: today in Japan)")
@click.option("--request-id", default=None)
@click.pass_obj
def run_rules(officer: Officer, as_of: str, request_id: str | None) -> None:
    """Fire the age and calendar rules now (each fires once per child and occasion anyway)."""
    officer.call("RunRules", pb.RunRulesRequest(request_id=request_id or new_id("cli"),
                                                municipality_code=officer.lgcode, as_of=as_of))


@cli.command()
@click.argument("notice_id")
@click.option("--page-size", default=100, show_default=True, type=click.IntRange(1, 500))
@click.option("--page-token", default="")
@click.pass_obj
def answers(officer: Officer, notice_id: str, page_size: int, page_token: str) -> None:
    """Answers to a survey notice, with counts per choice."""
    officer.call("ListSurveyAnswers", pb.ListSurveyAnswersRequest(notice_id=notice_id, page_size=page_size,
                                                                  page_token=page_token))


if __name__ == "__main__":
    cli()
