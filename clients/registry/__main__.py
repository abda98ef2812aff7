"""`python -m clients.registry`: import residents (resumable), check a municipality CSV."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from clients.registry.importer import ImportError_, ImportReport, import_file, municipality_channel
from server.registry.municipalities import code_problem, parse_csv


@click.group()
def cli() -> None:
    """Municipal registry tools."""


def _print_rejections(rejected) -> None:
    for row_number, violations in rejected:
        click.echo(f"  row {row_number}: " + "; ".join(f"{f}: {d}" for f, d in violations))


@cli.command("import-residents")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--lgcode", required=True, help="the municipality (6-digit code) the rows belong to")
@click.option("--target", default="127.0.0.1:50052", show_default=True,
              help="the server's mTLS listener for machine principals (ONESTOP_GRPC_MTLS_PORT, default gRPC port + 1)")
@click.option("--pki", "pki_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="development PKI directory (platform CA and machine certificates)")
@click.option("--resume", is_flag=True, help="skip rows already acknowledged (state file beside the CSV)")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 5_000))
def import_residents(csv_file: Path, lgcode: str, target: str, pki_dir: Path, resume: bool, batch_size: int) -> None:
    """Stream CSV_FILE's residents to ImportResidents as the municipality LGCODE."""
    if problem := code_problem(lgcode):
        raise click.BadParameter(problem, param_hint="--lgcode")

    def progress(report: ImportReport, batch) -> None:
        done = report.skipped + report.sent
        click.echo(f"rows {batch[0].row_number}-{batch[-1].row_number} acknowledged: {done}/{report.total_rows}"
                   f" ({report.created} created, {report.updated} updated, {len(report.rejected)} rejected)",
                   err=True)

    async def run() -> ImportReport:
        channel = municipality_channel(target, pki_dir, lgcode)
        try:
            return await import_file(csv_file, lgcode, channel, resume=resume, batch_size=batch_size,
                                     progress=progress)
        finally:
            await channel.close()

    try:
        report = asyncio.run(run())
    except ImportError_ as error:
        raise click.ClickException(str(error)) from None
    except Exception as error:  # grpc errors: say what happened; --resume continues from the last batch
        raise click.ClickException(f"import stopped: {error}; re-run with --resume to continue") from None
    click.echo(f"{report.total_rows} rows: {report.skipped} skipped (already acknowledged), {report.created} created,"
               f" {report.updated} updated, {len(report.rejected)} rejected")
    _print_rejections(report.rejected)


@cli.command("check-municipalities")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def check_municipalities(csv_file: Path) -> None:
    """Validate a municipality CSV (check digits, required fields); exit 1 if any row is rejected."""
    rows, rejects = parse_csv(csv_file)
    click.echo(f"{len(rows)} valid rows, {len(rejects)} rejected")
    for reject in rejects:
        click.echo(f"  row {reject.row_number}: {reject.reason}")
    if rejects:
        raise SystemExit(1)


if __name__ == "__main__":
    cli()
