"""Paging: every list RPC takes `page_size` and an opaque `page_token` and returns `next_page_token`."""

from __future__ import annotations

import base64
import json
from typing import Any

from server.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_size(requested: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    if requested < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    return default if requested == 0 else min(requested, maximum)


def encode_token(position: dict[str, Any]) -> str:
    """The position after the last row returned (a keyset cursor), opaque to callers."""
    raw = json.dumps(position, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> dict[str, Any] | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        position = json.loads(raw)
        if not isinstance(position, dict):
            raise ValueError
        return position
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument.field("page_token", "not a token returned by this list") from None
