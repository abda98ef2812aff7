"""Settings: environment variables `ONESTOP_*`, then an optional TOML file named by `ONESTOP_CONFIG`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

REPO_ROOT = Path(__file__).resolve().parent.parent


def _shared_data() -> Path:
    """`../shared/data` beside the checkout (the real municipality list, CC0)."""
    return REPO_ROOT.parent / "shared" / "data"


class Settings(BaseSettings):
    """Everything an operator may set. Paths default to places under `data_dir`."""

    model_config = SettingsConfigDict(env_prefix="ONESTOP_", extra="ignore")

    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    # Listener that requires platform client certificates (machine principals); 0 = grpc_port + 1.
    grpc_mtls_port: int = 0
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    data_dir: Path = REPO_ROOT / "var"
    municipalities_csv: Path = Field(default_factory=lambda: _shared_data() / "municipalities.csv")

    # TLS: the server's certificate and the platform CA that signs machine principals' client certs.
    tls: bool = True
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    # JPKI trust: card CA anchors and their CRLs (the development PKI's by default).
    card_anchors: list[Path] = Field(default_factory=list)
    card_crls: list[Path] = Field(default_factory=list)

    challenge_ttl_seconds: int = 120
    session_idle_seconds: int = 30 * 60
    session_absolute_seconds: int = 12 * 60 * 60

    max_message_bytes: int = 4 * 1024 * 1024
    attachment_max_bytes: int = 10 * 1024 * 1024
    application_max_bytes: int = 30 * 1024 * 1024
    shutdown_grace_seconds: float = 10.0
    # Background sweeps (server/timers.py), run by every server process (they are idempotent
    # transactions: processes sharing a database never apply anything twice). ONESTOP_TIMERS=false
    # switches the loops off (tests that drive `services["timers"].run_due()` by hand).
    timers: bool = True
    # Expire points lots past their municipality's expiry date. Lots expire at the time of day they
    # were granted, so a short interval keeps balances on time and each tick's batch small (the
    # points writer's batches run on the event loop); an idle tick is one index probe.
    points_expiry_interval_seconds: float = Field(default=60.0, gt=0)
    # Place conversions past their 14-day holding period; release redemption holds past 10 minutes.
    points_holdings_interval_seconds: float = Field(default=60.0, gt=0)
    # Expire kiosk transactions idle past their limit, voiding unconfirmed copies and charges.
    kiosk_expiry_interval_seconds: float = Field(default=60.0, gt=0)
    # Delete sign-in challenges expired over an hour ago (often, so each delete stays short).
    challenge_purge_interval_seconds: float = Field(default=60.0, gt=0)
    # Remove what a server killed mid-upload left in the blob folder (temporary files, files no
    # attachment names) once older than the age (far longer than an upload in progress is idle).
    upload_leftovers_interval_seconds: float = Field(default=3600.0, gt=0)
    upload_leftover_age_seconds: float = Field(default=3600.0, ge=0)
    # The longest an attachment upload may take (UPLOAD_TOO_SLOW after): keep it below the age above.
    upload_max_seconds: float = Field(default=1200.0, gt=0)
    # Kiosk certificate PDFs: worker processes that render them (the second core); 0 = on the loop.
    pdf_workers: int = Field(default=1, ge=0)
    # Benchmark instrumentation: a file the server keeps "<PDF CPU seconds> <count>" in.
    pdf_stats_file: Path | None = None
    # Notices: the scheduler ("on"/"off"; unset = on, except under a FixedClock, where tests drive
    # it), its tick, recipients written per fan-out transaction, and how often live streams poll
    # the database for notices written by other processes.
    notification_scheduler: Literal["", "on", "off"] = ""
    notification_tick_seconds: float = Field(default=5.0, gt=0)
    notification_fanout_chunk: int = Field(default=10_000, ge=1)
    notification_poll_ms: float = Field(default=200.0, gt=0)
    read_connections: int = 4
    # SQLite's sync at COMMIT: NORMAL (the default) survives a killed process; FULL also survives
    # an OS crash or power loss, for one fsync per commit (per batch where commits are grouped).
    db_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("ONESTOP_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "onestop.db"

    @property
    def pki_dir(self) -> Path:
        return self.data_dir / "pki"

    @property
    def blob_dir(self) -> Path:
        """Content-addressed files (attachments, issued documents) beside the database."""
        return self.data_dir / "blobs"
