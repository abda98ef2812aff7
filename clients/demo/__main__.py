"""`python -m clients.demo`: play the whole story against a platform and check every step.

    python -m clients.demo                      # starts its own platform (python -m server run), then stops it
    python -m clients.demo --target 127.0.0.1:50051 --gateway http://127.0.0.1:8080 --data-dir var
                                                # against a running `make run` (its PKI under var/pki)

Exit status 0 when every step's checks passed, 1 at the first failure (what failed is printed),
2 when the platform could not be reached or started.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import click
import uvloop

from clients.demo.platform import Endpoints, PlatformDidNotStart, own_platform, wait_until_ready
from clients.demo.story import Narrator, play


async def _main(target: str | None, mtls_target: str | None, gateway: str | None, data_dir: Path | None,
                keep: bool) -> int:
    narrator = Narrator()
    narrator.echo("onestop demo — 子育てワンストップ, お知らせ, コンビニ交付, 自治体ポイント")
    # Ctrl-C or a SIGTERM (a CI job cancelled) cancels the story, so a self-started platform is still stopped.
    main_task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main_task.cancel)
    try:
        if target is None:
            async with own_platform(keep=keep, say=narrator.echo) as endpoints:
                return await play(endpoints, narrator)
        endpoints = Endpoints.given(target, gateway, data_dir, mtls_target)
        narrator.echo(f"playing against the running platform at {endpoints.target} (mTLS {endpoints.mtls_target}), "
                      f"gateway {endpoints.gateway}, PKI {endpoints.pki_dir}")
        await wait_until_ready(endpoints, timeout=60)
        return await play(endpoints, narrator)
    except PlatformDidNotStart as error:
        narrator.echo(f"✗ no platform: {error}")
        return 2
    except asyncio.CancelledError:
        narrator.echo("✗ interrupted")
        return 130


@click.command()
@click.option("--target", default=None, metavar="HOST:PORT",
              help="gRPC listener of a running platform (default: start one of its own)")
@click.option("--mtls-target", default=None, metavar="HOST:PORT",
              help="its mTLS listener for machine principals (default: the --target port + 1)")
@click.option("--gateway", default=None, metavar="URL", help="its gateway (required with --target)")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="its data directory, holding pki/ (default: $ONESTOP_DATA_DIR or var/)")
@click.option("--keep", is_flag=True, help="keep the self-started platform's data directory")
def main(target: str | None, mtls_target: str | None, gateway: str | None, data_dir: Path | None,
         keep: bool) -> None:
    """Play the one-stop card's story end to end; exit non-zero at the first failed check."""
    if target is not None:
        if gateway is None:
            raise click.UsageError("--gateway is required with --target")
        data_dir = data_dir or Path(os.environ.get("ONESTOP_DATA_DIR", "var"))
    elif gateway is not None or mtls_target is not None:
        raise click.UsageError("--gateway and --mtls-target go with --target")
    sys.exit(uvloop.run(_main(target, mtls_target, gateway, data_dir, keep)))


if __name__ == "__main__":
    main()
