"""Small helpers of the notification tests: registry rows, stubs, error details."""

from __future__ import annotations

from datetime import date

from onestop.notification.v1 import notification_pb2 as pb
from onestop.notification.v1 import notification_pb2_grpc as pb_grpc

from server.clock import to_epoch_ms
from server.ids import new_id
from server.testing import bearer, holder, issue_card
from tests.helpers import error_details, expect_error

LG = "131016"
OTHER_LG = "141003"


async def add_person(platform, name: str, birth: date, *, household_id: str | None = None, lgcode: str = LG,
                     status: str = "active") -> str:
    """A registry row without a card (children, people who never sign in)."""
    await platform.add_municipality(lgcode)
    resident_id = new_id("res")
    async with platform.db.write() as tx:
        if household_id:
            await tx.execute("INSERT OR IGNORE INTO households (household_id, municipality_code) VALUES (?, ?)",
                             (household_id, lgcode))
        await tx.execute(
            "INSERT INTO residents (resident_id, municipality_code, household_id, name, birth_date, sex, address,"
            " status, updated_at_ms) VALUES (?, ?, ?, ?, ?, '1', '東京都千代田区', ?, ?)",
            (resident_id, lgcode, household_id, name, birth.isoformat(), status,
             to_epoch_ms(platform.clock.now())))
    return resident_id


async def add_card_holder(platform, name: str, birth: date = date(1990, 4, 10), *, household_id: str | None = None,
                          lgcode: str = LG) -> tuple[str, tuple]:
    """A resident with a card, signed in: (resident_id, bearer metadata)."""
    person = holder(name, birth_date=birth)
    card = issue_card(platform.pki, person, now=platform.clock.now())
    resident_id, card = await platform.add_resident(person, lgcode, card=card, household_id=household_id)
    return resident_id, bearer(await platform.sign_in(card))


def staff(platform, lgcode: str = LG) -> pb_grpc.NotificationServiceStub:
    return pb_grpc.NotificationServiceStub(platform.municipality(lgcode))


def public(platform) -> pb_grpc.NotificationServiceStub:
    return pb_grpc.NotificationServiceStub(platform.channel())


# One way to assert a refusal across the suite (tests/helpers.py).
details = error_details
refused = expect_error


def everyone(**kw) -> pb.Audience:
    return pb.Audience(all_residents=pb.Audience.AllResidents(), **kw)


async def inbox(platform, metadata) -> pb.ListNoticesResponse:
    return await public(platform).ListNotices(pb.ListNoticesRequest(page_size=100), metadata=metadata)
