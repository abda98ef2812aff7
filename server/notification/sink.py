"""NoticeSink: how other areas put a notice in one resident's inbox (the contract they rely on).

    sink = platform.services["notices"]
    notice_id = await sink.send_to_resident(tx, resident_id=..., municipality_code=..., title=...,
                                            body=..., dedupe_key=f"application:{app_id}:decided")

It writes inside the caller's transaction (so the notice exists exactly when the caller's change
does), never opens its own. With a `dedupe_key`, a second call with the same key returns the first
notice's id and inserts nothing (dedupe keys are global: prefix them with your area and record id).
The text is taken as given (no template rendering): callers pass finished text.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from server.clock import Clock, to_epoch_ms
from server.db import Tx
from server.errors import InvalidArgument, NotFound
from server.ids import new_id

CATEGORIES = ("application", "health", "vaccination", "allowance", "nursery", "single_parent", "general", "survey")
MAX_TITLE = 200
MAX_BODY = 10_000


def check_text(title: str, body: str, *, title_field: str = "title", body_field: str = "body") -> None:
    if not title.strip():
        raise InvalidArgument.field(title_field, "required")
    if len(title) > MAX_TITLE:
        raise InvalidArgument.field(title_field, f"at most {MAX_TITLE} characters")
    if not body.strip():
        raise InvalidArgument.field(body_field, "required")
    if len(body) > MAX_BODY:
        raise InvalidArgument.field(body_field, f"at most {MAX_BODY} characters")


class NoticeSink:
    """Published as `platform.services["notices"]` by the notification area's `prepare`."""

    def __init__(self, clock: Clock, on_delivered: Callable[[], None] | None = None) -> None:
        self._clock = clock
        self._on_delivered = on_delivered or (lambda: None)

    async def send_to_resident(self, tx: Tx, *, resident_id: str, municipality_code: str, title: str, body: str,
                               link: str = "", category: str = "application",
                               dedupe_key: str | None = None) -> str:
        """Deliver one notice to one resident inside `tx`; returns the notice id."""
        if dedupe_key is not None:
            prior = await tx.scalar("SELECT notice_id FROM notices WHERE dedupe_key = ?", (dedupe_key,))
            if prior is not None:
                return prior
        check_text(title, body)
        if category not in CATEGORIES:
            raise InvalidArgument.field("category", f"one of {', '.join(CATEGORIES)}")
        known = await tx.scalar(
            "SELECT 1 FROM residents WHERE resident_id = ? AND municipality_code = ?", (resident_id, municipality_code)
        )
        if known is None:
            raise NotFound("RESIDENT_NOT_FOUND", "no such resident in that municipality")
        notice_id = new_id("ntc")
        now_ms = to_epoch_ms(self._clock.now())
        await tx.execute(
            "INSERT INTO notices (notice_id, municipality_code, category, title, body, link, audience, status, source,"
            " created_at_ms, created_by, sent_at_ms, sent_by, recipient_count, dedupe_key)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'sent', 'sink', ?, 'sink', ?, 'sink', 1, ?)",
            (notice_id, municipality_code, category, title, body, link,
             json.dumps({"kind": "residents", "resident_ids": [resident_id]}), now_ms, now_ms, dedupe_key),
        )
        await tx.execute(
            "INSERT INTO deliveries (notice_id, resident_id, title, body, delivered_at_ms) VALUES (?, ?, ?, ?, ?)",
            (notice_id, resident_id, title, body, now_ms),
        )
        # Wake local stream subscribers; the write is visible once the caller commits, and the
        # shared poller picks it up then at the latest (other processes see it by polling).
        self._on_delivered()
        return notice_id
