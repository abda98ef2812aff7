"""The gateway's side of gRPC: one TLS channel to the server as the machine principal `gateway`.

The channel is made inside the running loop (Starlette lifespan), never at import. Each call passes
the phone's `Authorization: Bearer` header through and the request id as `x-request-id`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import grpc
from grpc import aio
from starlette.requests import Request

from clients.pki import CardAuthority, DevPki, MachineIdentity, PlatformAuthority
from server.config import Settings

GATEWAY_IDENTITY = MachineIdentity("gateway", "gw-1", {})
# An upload message carries at least this much of the file (its last one excepted), well under the
# server's message limit. uvicorn reads up to 256 KiB at a time, so a message is usually two network
# chunks (~500 KiB). Measured: each message costs the server ~150 us besides its bytes (direct uploads:
# 2.7 ms/MB user CPU in 256 KiB messages, 2.3 in 1 MiB ones), while each costs the gateway memory as
# it is sent (peak RSS over ten uploads, over idle: +24 MiB at this size, +37 at 512 KiB, +65 at 1 MiB).
CHUNK_BYTES = 256 * 1024


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials:
    """The platform CA as trust root and the gateway's client certificate (mTLS)."""
    pki = settings.pki_dir
    ca = (settings.client_ca or pki / "ca.pem").read_bytes()
    cert_path, key_path = _dev_pki(pki).machine(GATEWAY_IDENTITY)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key_path.read_bytes(),
                                        certificate_chain=cert_path.read_bytes())


def _dev_pki(root: Path) -> DevPki:
    """The existing development PKI, loaded without re-signing anything the server uses."""
    return DevPki(root=root, platform=PlatformAuthority.load(root), card_ca=CardAuthority.load(root / "card-ca"),
                  now=datetime.now(timezone.utc))


def open_channel(settings: Settings, target: str) -> aio.Channel:
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
    ]
    if not settings.tls:
        return aio.insecure_channel(target, options=options)
    return aio.secure_channel(target, channel_credentials(settings), options=options)


@dataclass
class Backend:
    channel: aio.Channel
    timeout_s: float = 30.0
    # A phone on a slow network may take minutes to send 10 MiB; the upload's deadline allows that.
    upload_timeout_s: float = 600.0

    def stub(self, stub_class):
        return stub_class(self.channel)


def backend(request: Request) -> Backend:
    return request.app.state.backend


def request_id(request: Request) -> str:
    return request.scope.get("state", {}).get("request_id", "")


def metadata(request: Request) -> tuple[tuple[str, str], ...]:
    """What the server needs from the phone's request: its bearer token and the request id."""
    pairs = [("x-request-id", request_id(request))]
    authorization = request.headers.get("authorization")
    if authorization:
        pairs.append(("authorization", authorization))
    return tuple(pairs)
