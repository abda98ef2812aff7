"""AuthService adapter: translate messages, call the sign-in rules, nothing else."""

from __future__ import annotations

from onestop.auth.v1 import auth_pb2, auth_pb2_grpc

from server import authz, context
from server.auth import store
from server.auth.challenges import ChallengeKey, new_key
from server.auth.signin import Authenticator, IssuedSession
from server.auth.trust import TrustStore
from server.authz import ANYONE, RESIDENT, Machine, Resident, machine
from server.clock import to_epoch_ms
from server.convert import ts, ts_ms
from server.crypto.jpki import CardTrust
from server.idempotency import check_request_id, run_once
from server.platform import Platform

SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name

authz.register(SERVICE, {
    "CreateChallenge": ANYONE,
    "SignIn": ANYONE,
    "RefreshSession": ANYONE,
    "SignOut": RESIDENT,
    "WhoAmI": ANYONE,
    "SubmitRevocationList": machine("operator"),
})


def card_trust(platform: Platform) -> CardTrust:
    settings = platform.settings
    anchors = settings.card_anchors or [settings.pki_dir / "card-ca" / "card-ca.pem"]
    crls = settings.card_crls or [p for p in [settings.pki_dir / "card-crl.der"] if p.exists()]
    return CardTrust.from_files(anchors, crls)


async def prepare(platform: Platform) -> None:
    """Make the authenticator available to the interceptor and to other areas (the kiosk)."""
    async with platform.db.write() as tx:  # the first process to start makes the shared key
        secret = await store.challenge_key(tx, new_key(), to_epoch_ms(platform.clock.now()))
    authenticator = Authenticator(platform, TrustStore(card_trust(platform), platform.db), ChallengeKey(secret))
    platform.services["authenticator"] = authenticator
    platform.services["resolve_token"] = authenticator.resolve


def _session(session: IssuedSession) -> auth_pb2.Session:
    return auth_pb2.Session(
        session_id=session.session_id,
        resident_id=session.resident_id,
        access_token=session.access_token,
        refresh_token=session.refresh_token,
        access_expires_at=ts_ms(session.access_expires_ms),
        absolute_expires_at=ts_ms(session.absolute_expires_ms),
    )


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, platform: Platform) -> None:
        self._p = platform
        self._auth: Authenticator = platform.services["authenticator"]

    async def CreateChallenge(self, request, context_):
        challenge = await self._auth.create_challenge()
        return auth_pb2.CreateChallengeResponse(
            challenge_id=challenge.challenge_id, nonce=challenge.nonce, expires_at=ts(challenge.expires_at)
        )

    async def SignIn(self, request, context_):
        # Not replayed from an idempotency record: the nonce is single-use, and handing the same
        # tokens to whoever repeats a captured request would defeat it. A lost reply means a new
        # challenge.
        check_request_id(request.request_id)
        session = await self._auth.sign_in(request.challenge_id, request.certificate, request.signature)
        return auth_pb2.SignInResponse(session=_session(session))

    async def RefreshSession(self, request, context_):
        check_request_id(request.request_id)  # like SignIn: fresh tokens are never replayed
        session = await self._auth.refresh(request.refresh_token)
        return auth_pb2.RefreshSessionResponse(session=_session(session))

    async def SignOut(self, request, context_):
        check_request_id(request.request_id)
        resident = authz.require_resident(context.current().principal)
        await self._auth.sign_out(resident.session_id)  # ending an ended session is a no-op
        return auth_pb2.SignOutResponse()

    async def WhoAmI(self, request, context_):
        principal = context.current().principal
        if isinstance(principal, Resident):
            return auth_pb2.WhoAmIResponse(kind=auth_pb2.CALLER_KIND_RESIDENT, resident_id=principal.resident_id,
                                           municipality_code=principal.municipality_code)
        if isinstance(principal, Machine):
            return auth_pb2.WhoAmIResponse(
                kind=auth_pb2.CALLER_KIND_MACHINE, role=principal.role, machine_id=principal.id,
                attributes=dict(principal.attributes),
            )
        return auth_pb2.WhoAmIResponse(kind=auth_pb2.CALLER_KIND_ANONYMOUS)

    async def SubmitRevocationList(self, request, context_):
        async def work(tx):
            issuer, count, this_update = await self._auth.submit_crl(tx, request.crl)
            return auth_pb2.SubmitRevocationListResponse(issuer=issuer, revoked_count=count, this_update=ts(this_update))

        return await run_once(self._p.db, self._p.clock, request, auth_pb2.SubmitRevocationListResponse, work)


def add_to_server(server, platform: Platform) -> list[str]:
    auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(platform), server)
    return [SERVICE]
