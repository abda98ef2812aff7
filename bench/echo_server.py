"""Bare grpc.aio echo server on uvloop (baseline): `python bench/echo_server.py PORT PKI_DIR`."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
import uvloop
from grpc import aio


async def unary(request: bytes, context) -> bytes:
    return request


async def stream(requests, context):
    async for request in requests:
        yield request


async def main(port: int, pki: Path) -> None:
    server = aio.server()
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.stream_stream_rpc_method_handler(stream),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", handlers),))
    credentials = grpc.ssl_server_credentials([((pki / "server.key").read_bytes(), (pki / "server.pem").read_bytes())])
    server.add_secure_port(f"127.0.0.1:{port}", credentials)
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), Path(sys.argv[2])))
