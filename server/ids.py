"""Identifiers: time-ordered (so pages sort by creation) and random (so they reveal nothing)."""

from __future__ import annotations

import secrets
import time


def new_id(prefix: str) -> str:
    """`<prefix>_<12 hex ms><16 hex random>`, e.g. `app_018f2c...`."""
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


def new_secret(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)
