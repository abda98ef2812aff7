"""The notification tests drive the scheduler themselves (`scheduler.tick()`), at FixedClock instants."""

import pytest


@pytest.fixture(autouse=True)
def _no_background_scheduler(monkeypatch):
    monkeypatch.setenv("ONESTOP_NOTIFICATION_SCHEDULER", "off")
