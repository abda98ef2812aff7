"""`python -m gateway`: serve the gateway on settings.http_host:http_port with uvicorn on uvloop."""

from __future__ import annotations

import click
import uvicorn

from gateway.app import create_app
from server.config import Settings
from server.logs import setup


@click.command()
@click.option("--grpc-target", default=None, help="host:port of the gRPC server (default: settings)")
def main(grpc_target: str | None) -> None:
    settings = Settings()
    setup(settings.log_level)  # the server's JSON formatter, which drops personal-data keys
    app = create_app(settings, grpc_target=grpc_target)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, loop="uvloop", http="h11",
                log_level=settings.log_level.lower(), access_log=False, proxy_headers=False, server_header=False,
                # Live notice streams never end by themselves: give in-flight requests the grace
                # period, then close.
                timeout_graceful_shutdown=int(settings.shutdown_grace_seconds))


if __name__ == "__main__":
    main()
