"""Shared fixtures: one development PKI per session (RSA keys are slow), a real server per test."""

from __future__ import annotations

import pytest
import uvloop

from server.testing import TEST_START, make_pki, run_platform


def pytest_asyncio_loop_factories(config, item):
    """Every async test runs on uvloop, as the server does in production."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def pki_template(tmp_path_factory):
    """A development PKI made once; each platform copies it into its own data directory."""
    directory = tmp_path_factory.mktemp("pki-template") / "pki"
    make_pki(directory, now=TEST_START)
    return directory


@pytest.fixture
async def platform(tmp_path, pki_template):
    async with run_platform(tmp_path, pki_template=pki_template) as running:
        yield running
