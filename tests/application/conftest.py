"""Fixtures of the application tests (helpers live in support.py)."""

from __future__ import annotations

import pytest
from onestop.application.v1 import application_pb2_grpc as pb_grpc

from tests.application.support import LG, Applicant, make_applicant


@pytest.fixture
async def applicant(platform) -> Applicant:
    return await make_applicant(platform)


@pytest.fixture
def staff(platform) -> pb_grpc.ApplicationServiceStub:
    return pb_grpc.ApplicationServiceStub(platform.municipality(LG))
