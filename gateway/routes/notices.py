"""Placeholder until its proto lands."""

from __future__ import annotations

from gateway.api import Operation


def operations() -> list[Operation]:
    return []
