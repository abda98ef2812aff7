"""`python -m clients.partner`: a point partner (card company, airline, carrier) converting members' points.

    python -m clients.partner --pki var/pki --partner card-co convert M-12345 1000
    python -m clients.partner --pki var/pki --partner card-co convert M-12345 1000 --request-id conv-2026-0001

Connects over mTLS as partner PARTNER (its certificate from the development PKI). Conversion is one
way: municipal points = partner points x the partner's rate, rounded down; they wait in the member's
holding account for up to 14 days until the resident picks a municipality. Reuse --request-id to
retry safely (the first outcome is returned). Refusals print the code and reason and exit 1.
"""

from __future__ import annotations

from datetime import timezone
from pathlib import Path

import click
import grpc
from onestop.points.v1 import points_pb2 as pb
from onestop.points.v1 import points_pb2_grpc

from clients.connect import describe, machine_channel
from server.crypto.machine import MachineIdentity
from server.ids import new_id


@click.group()
@click.option("--target", default="127.0.0.1:50052", show_default=True, help="the server's mTLS listener")
@click.option("--pki", "pki_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--partner", "partner_id", required=True, help="this partner's id (its certificate names it)")
@click.option("--timeout", default=30.0, show_default=True)
@click.pass_context
def cli(ctx: click.Context, target: str, pki_dir: Path, partner_id: str, timeout: float) -> None:
    """A point partner's terminal onto PointsService."""
    channel = machine_channel(target, pki_dir, MachineIdentity("partner", partner_id, {}))
    ctx.obj = {"stub": points_pb2_grpc.PointsServiceStub(channel), "timeout": timeout}


@cli.command()
@click.argument("member_account")
@click.argument("partner_points", type=click.IntRange(1))
@click.option("--request-id", default="", help="idempotency key; reuse it to retry (default: a new one)")
@click.pass_context
def convert(ctx: click.Context, member_account: str, partner_points: int, request_id: str) -> None:
    """Convert PARTNER_POINTS of MEMBER_ACCOUNT into municipal points (one way)."""
    request = pb.ConvertPartnerPointsRequest(request_id=request_id or new_id("cnvrq"), member_account=member_account,
                                             partner_points=partner_points)
    try:
        reply = ctx.obj["stub"].ConvertPartnerPoints(request, timeout=ctx.obj["timeout"])
    except grpc.RpcError as error:
        raise click.ClickException(describe(error)) from None
    held_until = reply.held_until.ToDatetime(tzinfo=timezone.utc).isoformat(timespec="seconds")
    click.echo(f"conversion {reply.conversion_id}: {reply.municipal_points} municipal points held until {held_until}"
               f" (request {request.request_id})")


if __name__ == "__main__":
    cli()
