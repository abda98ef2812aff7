"""Sign-in with the card (challenge -> signature -> session), refresh, sign-out, who am I."""

from __future__ import annotations

from onestop.auth.v1 import auth_pb2, auth_pb2_grpc
from starlette.requests import Request
from starlette.responses import Response

from gateway.api import Operation, json_message, json_response, unary
from gateway.backend import backend


def _stub(request: Request) -> auth_pb2_grpc.AuthServiceStub:
    return backend(request).stub(auth_pb2_grpc.AuthServiceStub)


async def create_challenge(request: Request) -> Response:
    message = await json_message(request, auth_pb2.CreateChallengeRequest)
    return await unary(request, _stub(request).CreateChallenge, message)


async def sign_in(request: Request) -> Response:
    message = await json_message(request, auth_pb2.SignInRequest)
    return await unary(request, _stub(request).SignIn, message)


async def refresh(request: Request) -> Response:
    message = await json_message(request, auth_pb2.RefreshSessionRequest)
    return await unary(request, _stub(request).RefreshSession, message)


async def sign_out(request: Request) -> Response:
    message = await json_message(request, auth_pb2.SignOutRequest)
    return await unary(request, _stub(request).SignOut, message)


async def me(request: Request) -> Response:
    if "authorization" not in request.headers:
        # Without a token the server would describe the gateway itself; the phone is anonymous.
        return json_response(auth_pb2.WhoAmIResponse(kind=auth_pb2.CALLER_KIND_ANONYMOUS))
    return await unary(request, _stub(request).WhoAmI, auth_pb2.WhoAmIRequest())


def operations() -> list[Operation]:
    tag = "auth"
    return [
        Operation("POST", "/v1/auth/challenge", create_challenge, "A single-use nonce for the card to sign",
                  "createChallenge", tag, auth_pb2.CreateChallengeRequest, auth_pb2.CreateChallengeResponse,
                  public=True, errors=(400, 422, 500, 503, 504)),
        Operation("POST", "/v1/auth/sign-in", sign_in,
                  "Sign in: the user-authentication certificate and its signature over the nonce (base64)",
                  "signIn", tag, auth_pb2.SignInRequest, auth_pb2.SignInResponse, public=True,
                  errors=(400, 401, 422, 500, 503, 504)),
        Operation("POST", "/v1/auth/refresh", refresh, "A new access token for a refresh token",
                  "refreshSession", tag, auth_pb2.RefreshSessionRequest, auth_pb2.RefreshSessionResponse,
                  public=True, errors=(400, 401, 422, 500, 503, 504)),
        Operation("POST", "/v1/auth/sign-out", sign_out, "End the session (its tokens stop working at once)",
                  "signOut", tag, auth_pb2.SignOutRequest, auth_pb2.SignOutResponse,
                  errors=(400, 401, 422, 500, 503, 504)),
        Operation("GET", "/v1/me", me, "Who the platform thinks the caller is", "whoAmI", tag,
                  None, auth_pb2.WhoAmIResponse, body="none", public=True, errors=(401, 500, 503, 504)),
    ]
