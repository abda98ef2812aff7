"""`python -m clients.shop`: a shop or facility terminal (library, shopping street, museum, sports facility).

    python -m clients.shop --pki var/pki --shop lib-1 --lg 131016 --kind library register --card card.json
    python -m clients.shop --pki var/pki --shop lib-1 --lg 131016 --kind library lookup --card card.json
    python -m clients.shop --pki var/pki --shop lib-1 --lg 131016 authorize --card card.json --amount 300
    python -m clients.shop --pki var/pki --shop lib-1 --lg 131016 capture hld_...
    python -m clients.shop --pki var/pki --shop lib-1 --lg 131016 void hld_...

The card holder at the terminal signs a fresh challenge with the card (PIN asked unless --pin); the
terminal gets back only its own member number, or a hold on points. No lending or purchase
history is sent or kept. Refusals print the gRPC code and reason and exit with status 1.
"""

from __future__ import annotations

from pathlib import Path

import click
import grpc
from onestop.auth.v1 import auth_pb2, auth_pb2_grpc
from onestop.points.v1 import points_pb2 as pb
from onestop.points.v1 import points_pb2_grpc

from clients.connect import describe, machine_channel
from clients.pki import SoftwareCard
from server.crypto.machine import MachineIdentity
from server.ids import new_id


class Terminal:
    def __init__(self, channel: grpc.Channel, timeout: float) -> None:
        self.points = points_pb2_grpc.PointsServiceStub(channel)
        self.auth = auth_pb2_grpc.AuthServiceStub(channel)
        self.timeout = timeout

    def call(self, method: str, request):
        try:
            return getattr(self.points, method)(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise click.ClickException(describe(error)) from None

    def present(self, card_path: Path, pin: str) -> pb.CardPresentation:
        """The holder's card signs a fresh challenge (the PIN unlocks the card's authentication key)."""
        card = SoftwareCard.load(card_path)
        try:
            challenge = self.auth.CreateChallenge(auth_pb2.CreateChallengeRequest(), timeout=self.timeout)
        except grpc.RpcError as error:
            raise click.ClickException(describe(error)) from None
        return pb.CardPresentation(challenge_id=challenge.challenge_id, certificate=card.auth_certificate_der,
                                   signature=card.sign_with_auth_key(challenge.nonce, pin))


card_option = click.option("--card", "card_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
                           help="the software card file of the holder at the terminal")
pin_option = click.option("--pin", prompt=True, hide_input=True, help="the card's 4-digit PIN")


@click.group()
@click.option("--target", default="127.0.0.1:50052", show_default=True, help="the server's mTLS listener")
@click.option("--pki", "pki_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--shop", "shop_id", required=True, help="this terminal's shop/facility id")
@click.option("--lg", "lgcode", required=True, help="the municipality the shop is in")
@click.option("--kind", default="shop", show_default=True,
              help="library, shopping_street, museum, sports_facility, transport, shop")
@click.option("--timeout", default=30.0, show_default=True)
@click.pass_context
def cli(ctx: click.Context, target: str, pki_dir: Path, shop_id: str, lgcode: str, kind: str, timeout: float) -> None:
    """A shop or facility terminal onto PointsService."""
    identity = MachineIdentity("shop", shop_id, {"lg": lgcode, "kind": kind})
    ctx.obj = Terminal(machine_channel(target, pki_dir, identity), timeout)


@cli.command()
@card_option
@pin_option
@click.option("--member-number", default="", help="the facility's own number (default: generated)")
@click.pass_obj
def register(terminal: Terminal, card_path: Path, pin: str, member_number: str) -> None:
    """Register the card holder as a member of this facility."""
    reply = terminal.call("RegisterMembership", pb.RegisterMembershipRequest(
        request_id=new_id("memrq"), card=terminal.present(card_path, pin), member_number=member_number))
    click.echo(f"member {reply.membership.member_number} ({reply.membership.facility_kind})")


@cli.command()
@card_option
@pin_option
@click.pass_obj
def lookup(terminal: Terminal, card_path: Path, pin: str) -> None:
    """This facility's member number for the card at the terminal."""
    reply = terminal.call("LookupMembership", pb.LookupMembershipRequest(card=terminal.present(card_path, pin)))
    click.echo(f"member {reply.membership.member_number}")


@cli.command()
@card_option
@pin_option
@click.option("--amount", required=True, type=click.IntRange(1))
@click.option("--municipality", default="", help="whose points (default: the shop's municipality)")
@click.option("--event", "event_id", default="", help="spend this support event's points")
@click.pass_context
def authorize(ctx: click.Context, card_path: Path, pin: str, amount: int, municipality: str, event_id: str) -> None:
    """Hold AMOUNT points of the card holder (expires in 10 minutes unless captured)."""
    terminal: Terminal = ctx.obj
    lgcode = municipality or ctx.parent.params["lgcode"]
    reply = terminal.call("AuthorizeRedemption", pb.AuthorizeRedemptionRequest(
        request_id=new_id("authrq"), card=terminal.present(card_path, pin), municipality_code=lgcode,
        event_id=event_id, amount=amount))
    click.echo(f"hold {reply.hold_id}: {amount} points, {reply.available} still available")


@cli.command()
@click.argument("hold_id")
@click.option("--request-id", default="", help="idempotency key; reuse it to retry")
@click.pass_obj
def capture(terminal: Terminal, hold_id: str, request_id: str) -> None:
    """Post a hold: the points are owed to this shop."""
    reply = terminal.call("CaptureRedemption", pb.CaptureRedemptionRequest(
        request_id=request_id or new_id("caprq"), hold_id=hold_id))
    click.echo(f"captured {reply.amount} points ({reply.transfer_id})")


@cli.command()
@click.argument("hold_id")
@click.option("--request-id", default="", help="idempotency key; reuse it to retry")
@click.pass_obj
def void(terminal: Terminal, hold_id: str, request_id: str) -> None:
    """Release a hold without moving points."""
    terminal.call("VoidRedemption", pb.VoidRedemptionRequest(request_id=request_id or new_id("voidrq"),
                                                             hold_id=hold_id))
    click.echo(f"voided {hold_id}")


if __name__ == "__main__":
    cli()
