"""Sign in with a software card from a shell: `python -m clients.signin --card FILE --pin 1234`.

Talks to the server's plain-TLS listener (no client certificate), exactly as a phone app would:
challenge -> the card signs the nonce with its authentication key (PIN) -> SignIn -> WhoAmI.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
import grpc
from onestop.auth.v1 import auth_pb2, auth_pb2_grpc

from clients.pki import CardLocked, SoftwareCard, WrongPin
from server.config import Settings
from server.ids import new_id


async def sign_in(target: str, ca: bytes, card: SoftwareCard, pin: str) -> tuple[auth_pb2.Session, auth_pb2.WhoAmIResponse]:
    """The whole card sign-in; returns the session and what the server says about the caller."""
    async with grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(ca)) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        challenge = await stub.CreateChallenge(auth_pb2.CreateChallengeRequest())
        signature = card.sign_with_auth_key(challenge.nonce, pin)
        reply = await stub.SignIn(auth_pb2.SignInRequest(
            request_id=new_id("rq"), challenge_id=challenge.challenge_id,
            certificate=card.auth_certificate_der, signature=signature))
        me = await stub.WhoAmI(auth_pb2.WhoAmIRequest(),
                               metadata=(("authorization", f"Bearer {reply.session.access_token}"),))
        return reply.session, me


@click.command()
@click.option("--card", "card_path", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--pin", prompt=True, hide_input=True, help="The card's 4-digit authentication PIN.")
@click.option("--target", default=None, help="host:port of the gRPC TLS listener (default from settings).")
@click.option("--ca", type=click.Path(exists=True, path_type=Path), default=None, help="Platform CA (pki/ca.pem).")
def main(card_path: Path, pin: str, target: str | None, ca: Path | None) -> None:
    """Sign in with a software My Number Card and print the session."""
    settings = Settings()
    target = target or f"{settings.grpc_host}:{settings.grpc_port}"
    ca_bytes = (ca or settings.pki_dir / "ca.pem").read_bytes()
    card = SoftwareCard.load(card_path)
    try:
        session, me = asyncio.run(sign_in(target, ca_bytes, card, pin))
    except WrongPin as wrong:
        raise click.ClickException(f"wrong PIN: {wrong.remaining} tries left before the card locks")
    except CardLocked:
        raise click.ClickException("the card is locked; the municipality can reset it")
    except grpc.aio.AioRpcError as error:
        raise click.ClickException(f"{error.code().name}: {error.details()}")
    click.echo(f"signed in as resident {me.resident_id} of {me.municipality_code}")
    click.echo(f"session {session.session_id}, access token valid until {session.access_expires_at.ToJsonString()}")
    click.echo(f"export ONESTOP_TOKEN={session.access_token}")


if __name__ == "__main__":
    main()
