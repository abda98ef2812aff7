"""mTLS channel and refusal text shared by the points CLIs (clients.partner, clients.shop)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from clients.pki import DevPki
from server.crypto.machine import MachineIdentity


def describe(error: grpc.RpcError) -> str:
    text = f"{error.code().name}: {error.details()}"
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
        if detail.Unpack(info):
            text += f" [reason {info.reason}]"
        elif detail.Unpack(bad):
            text += "".join(f"\n  {v.field}: {v.description}" for v in bad.field_violations)
    return text


def machine_channel(target: str, pki_dir: Path, identity: MachineIdentity) -> grpc.Channel:
    pki = DevPki.ensure(pki_dir, now=datetime.now(timezone.utc))
    cert, key = pki.machine(identity)
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_path.read_bytes(),
                                               private_key=key.read_bytes(), certificate_chain=cert.read_bytes())
    return grpc.secure_channel(target, credentials)
