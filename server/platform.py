"""What every area's adapter is given: settings, clock, database, card trust, blob store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from server.clock import Clock
from server.config import Settings
from server.db import Database


@dataclass
class Platform:
    settings: Settings
    clock: Clock
    db: Database
    # Area-provided shared services, by name (e.g. "card_trust", "notices"): set at start-up by
    # the area that owns them, read by others, so areas never import each other's internals.
    services: dict[str, Any] = field(default_factory=dict)
    # Called (in order) when the server stops, after in-flight calls finish and before the database
    # closes: areas stop their background tasks here.
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
