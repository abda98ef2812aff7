"""`python -m mobile_stub --base-url URL --card CARD.json [COMMAND]`: a phone, step by step.

Without a command it runs the story: sign in (PIN), search 児童手当, fill 認定請求 from the card,
photograph the health insurance card (a JPEG with GPS), sign (password) and submit, read the status.
`status APP_ID` reads one application; `answer APP_ID --set claimant.phone=03-...` answers a
correction request (補正) and resubmits; `notices` lists the inbox.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import uvloop

from clients.pki import SoftwareCard
from mobile_stub.app import GatewayCallError, MobileApp


def _say(line: str) -> None:
    click.echo(f"  - {line}")


def _phone(ctx: click.Context) -> MobileApp:
    o = ctx.obj
    return MobileApp(o["base_url"], SoftwareCard.load(o["card"]), o["pin"], o["password"], say=_say)


def _run(coro) -> None:
    try:
        uvloop.run(coro)
    except GatewayCallError as error:
        click.echo(f"refused: HTTP {error.status_code} {error.reason} {error.body.get('message', '')}", err=True)
        sys.exit(1)


@click.group(invoke_without_command=True)
@click.option("--base-url", default="http://127.0.0.1:8080", show_default=True, help="the gateway")
@click.option("--card", "card", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="software card file (clients.pki card issue)")
@click.option("--pin", default="1234", show_default=True, help="the card's 4-digit PIN (sign-in)")
@click.option("--password", default="ABC123", show_default=True, help="the card's signature password")
@click.pass_context
def cli(ctx: click.Context, base_url: str, card: Path, pin: str, password: str) -> None:
    """A scripted smartphone app holding a software My Number Card."""
    ctx.obj = {"base_url": base_url, "card": card, "pin": pin, "password": password}
    if ctx.invoked_subcommand is None:
        ctx.invoke(story)


@cli.command()
@click.pass_context
def story(ctx: click.Context) -> None:
    """Sign in, search, fill 児童手当 認定請求, attach a GPS-tagged photo, sign, submit, read the status."""

    async def go() -> None:
        async with _phone(ctx) as phone:
            click.echo("1. sign in with the card (PIN)")
            await phone.sign_in()
            click.echo("2. search procedures")
            await phone.search("児童手当")
            click.echo("3. fill 児童手当 認定請求 from the card")
            application = await phone.create_child_allowance_claim()
            app_id = application["applicationId"]
            click.echo("4. photograph the health insurance card (JPEG with GPS) and attach it")
            await phone.attach_photo(app_id, "health_insurance")
            click.echo("5. sign with the signature certificate (password) and submit")
            await phone.submit(app_id)
            click.echo("6. status")
            await phone.status(app_id)
            click.echo(f"application id: {app_id}")

    _run(go())


@cli.command()
@click.argument("application_id")
@click.pass_context
def status(ctx: click.Context, application_id: str) -> None:
    """Sign in and read one application's status and open correction reasons."""

    async def go() -> None:
        async with _phone(ctx) as phone:
            await phone.sign_in()
            application = await phone.get(application_id)
            _say(f"{application_id}: {application['status']}")
            for reason in application.get("corrections", []):
                _say(f"補正: {reason.get('fieldPath') or reason.get('attachmentSlot')}: {reason.get('reason')}")
            if application.get("resultText"):
                _say(f"result: {application['decision']} {application['resultText']}")

    _run(go())


def _set(form: dict, dotted: str, value: str) -> None:
    node = form
    parts = dotted.removeprefix("form.").split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    try:
        node[parts[-1]] = json.loads(value)
    except json.JSONDecodeError:
        node[parts[-1]] = value


@cli.command()
@click.argument("application_id")
@click.option("--set", "changes", multiple=True, metavar="PATH=VALUE", help="e.g. claimant.phone=03-1111-2222")
@click.pass_context
def answer(ctx: click.Context, application_id: str, changes: tuple[str, ...]) -> None:
    """Answer a correction request (補正): change fields, re-sign, resubmit."""

    def fix(form: dict, reasons: list[dict]) -> dict:
        for change in changes:
            path, _, value = change.partition("=")
            _set(form, path, value)
        return form

    async def go() -> None:
        async with _phone(ctx) as phone:
            await phone.sign_in()
            await phone.answer_correction(application_id, fix)

    _run(go())


@cli.command()
@click.option("--follow", default=0, type=click.IntRange(0, 1000),
              help="then wait for this many new notices on the live stream")
@click.option("--timeout", default=300.0, show_default=True, help="seconds to wait for each new notice")
@click.pass_context
def notices(ctx: click.Context, follow: int, timeout: float) -> None:
    """Sign in and list the inbox; with --follow N, print N new notices as they arrive."""

    async def go() -> None:
        async with _phone(ctx) as phone:
            await phone.sign_in()
            inbox = await phone.notices()
            _say(f"{inbox.get('unreadCount', 0)} unread")
            for notice in inbox.get("notices", []):
                _say(f"{'  ' if notice['read'] else '* '}{notice['deliveredAt']} {notice['title']}")
            if follow:
                async for _ in phone.follow_notices(follow, after=inbox.get("latestCursor", 0), timeout=timeout):
                    pass

    _run(go())


if __name__ == "__main__":
    cli()
