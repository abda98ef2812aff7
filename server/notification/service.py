"""NotificationService adapter (filled in below); publishes the NoticeSink for other areas."""

from __future__ import annotations

from server.notification.sink import NoticeSink
from server.platform import Platform


async def prepare(platform: Platform) -> None:
    platform.services["notices"] = NoticeSink(platform.clock)


def add_to_server(server, platform: Platform) -> list[str]:
    return []
