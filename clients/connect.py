"""What every machine-principal CLI needs: mTLS credentials from the development PKI, and a
refusal turned into readable text (code, ErrorInfo reason, the fields at fault)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from clients.pki import DevPki
from server.crypto.machine import MachineIdentity


def describe(error: grpc.RpcError) -> str:
    """`CODE: message [reason R]` and one line per field violation."""
    text = f"{error.code().name}: {error.details()}"
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
        if detail.Unpack(info):
            text += f" [reason {info.reason}]"
        elif detail.Unpack(bad):
            text += "".join(f"\n  {v.field}: {v.description}" for v in bad.field_violations)
    return text


def machine_credentials(pki_dir: Path, identity: MachineIdentity) -> grpc.ChannelCredentials:
    """Client-certificate credentials for `identity` (issued on first use) trusting the platform CA."""
    pki = DevPki.ensure(pki_dir, now=datetime.now(timezone.utc))
    cert, key = pki.machine(identity)
    return grpc.ssl_channel_credentials(root_certificates=pki.ca_path.read_bytes(),
                                        private_key=key.read_bytes(), certificate_chain=cert.read_bytes())


def machine_channel(target: str, pki_dir: Path, identity: MachineIdentity) -> grpc.Channel:
    """A blocking channel to the mTLS listener as `identity`."""
    return grpc.secure_channel(target, machine_credentials(pki_dir, identity))
