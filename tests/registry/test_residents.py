"""Residents and households over real gRPC + TLS: scope, versions, retries, reading, paging."""

from __future__ import annotations

import asyncio

import grpc
from onestop.registry.v1 import registry_pb2 as pb

from server.testing import bearer, holder
from tests.helpers import expect_error
from tests.registry.support import CHIYODA, CHUO, create, resident, rid, stub, with_municipalities

PD = grpc.StatusCode.PERMISSION_DENIED
IA = grpc.StatusCode.INVALID_ARGUMENT


async def stored(platform, resident_id):
    async with platform.db.read() as tx:
        return await tx.one("SELECT * FROM residents WHERE resident_id = ?", (resident_id,))


async def test_create_update_and_version_conflict(platform):
    await with_municipalities(platform)
    registry = stub(platform)
    made = await create(registry, household_id="hh_sato", household_head=True, relationship="世帯主")
    assert made.version == 1 and made.status == pb.RESIDENT_STATUS_ACTIVE and made.household_head
    row = await stored(platform, made.resident_id)
    assert (row["name"], row["birth_date"], row["sex"], row["municipality_code"]) == ("佐藤 健", "1985-06-01", "1", CHIYODA)

    changed = pb.Resident()
    changed.CopyFrom(made)
    changed.address = "東京都千代田区丸の内2-2"
    reply = await registry.UpsertResident(pb.UpsertResidentRequest(request_id=rid(), resident=changed,
                                                                   expected_version=1))
    assert not reply.created and reply.resident.version == 2 and reply.resident.address.endswith("2-2")

    stale = await expect_error(registry.UpsertResident(pb.UpsertResidentRequest(
        request_id=rid(), resident=changed, expected_version=1)), grpc.StatusCode.ABORTED, "VERSION_CONFLICT")
    assert stale
    assert (await stored(platform, made.resident_id))["version"] == 2


async def test_concurrent_updates_with_one_version_one_wins(platform):
    await with_municipalities(platform)
    registry = stub(platform)
    made = await create(registry)

    async def update(i):
        changed = pb.Resident()
        changed.CopyFrom(made)
        changed.address = f"東京都千代田区{i}"
        try:
            await registry.UpsertResident(pb.UpsertResidentRequest(request_id=rid(), resident=changed,
                                                                   expected_version=1))
            return "ok"
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.ABORTED
            return "conflict"

    outcomes = await asyncio.gather(*(update(i) for i in range(8)))
    assert sorted(outcomes) == ["conflict"] * 7 + ["ok"]
    assert (await stored(platform, made.resident_id))["version"] == 2


async def test_other_municipality_may_not_write_or_read(platform):
    await with_municipalities(platform)
    chiyoda, chuo = stub(platform, CHIYODA), stub(platform, CHUO)
    # writing a resident into another municipality
    await expect_error(chuo.UpsertResident(pb.UpsertResidentRequest(request_id=rid(), resident=resident())),
                       PD, "OTHER_MUNICIPALITY")
    made = await create(chiyoda)
    changed = pb.Resident()
    changed.CopyFrom(made)
    changed.municipality_code = CHUO  # even claiming the resident for itself
    await expect_error(chuo.UpsertResident(pb.UpsertResidentRequest(request_id=rid(), resident=changed,
                                                                     expected_version=1)), PD, "OTHER_MUNICIPALITY")
    await expect_error(chuo.GetResident(pb.GetResidentRequest(resident_id=made.resident_id)), PD, "OTHER_MUNICIPALITY")
    await expect_error(chuo.RecordMove(pb.RecordMoveRequest(request_id=rid(), resident_id=made.resident_id,
                                                            kind=pb.MOVE_KIND_MOVE_OUT, date="2026-12-01",
                                                            destination="大阪府")), PD, "OTHER_MUNICIPALITY")
    await expect_error(chuo.ListResidents(pb.ListResidentsRequest(municipality_code=CHIYODA)), PD,
                       "OTHER_MUNICIPALITY")
    # an anonymous caller is not a municipal system at all
    await expect_error(stub(platform, None).UpsertResident(pb.UpsertResidentRequest(
        request_id=rid(), resident=resident())), grpc.StatusCode.UNAUTHENTICATED, "AUTHENTICATION_REQUIRED")
    row = await stored(platform, made.resident_id)
    assert (row["municipality_code"], row["status"], row["version"]) == (CHIYODA, "active", 1)


async def test_bad_input_names_the_fields(platform):
    await with_municipalities(platform)
    registry = stub(platform)
    error = await expect_error(registry.UpsertResident(pb.UpsertResidentRequest(
        request_id=rid(), resident=resident(name="", birth_date="1985-13-01", sex=0, honseki_code="131017"))),
        IA, "INVALID_FIELD", "resident.name")
    from tests.helpers import error_details
    _, fields = error_details(error)
    assert {"resident.name", "resident.birth_date", "resident.sex", "resident.honseki_code"} <= set(fields)
    await expect_error(registry.UpsertResident(pb.UpsertResidentRequest(request_id=rid(), resident=resident(
        birth_date="2030-01-01"))), IA, field="resident.birth_date")
    await expect_error(registry.UpsertResident(pb.UpsertResidentRequest(resident=resident())), IA,
                       field="request_id")
    async with platform.db.read() as tx:
        assert await tx.scalar("SELECT count(*) FROM residents") == 0


async def test_retry_with_same_request_id_returns_first_outcome(platform):
    await with_municipalities(platform)
    registry = stub(platform)
    request = pb.UpsertResidentRequest(request_id=rid(), resident=resident())
    first = await registry.UpsertResident(request)
    again = await registry.UpsertResident(request)
    assert again == first
    async with platform.db.read() as tx:
        assert await tx.scalar("SELECT count(*) FROM residents") == 1
    other = pb.UpsertResidentRequest(request_id=request.request_id, resident=resident(name="別人"))
    await expect_error(registry.UpsertResident(other), IA, "REQUEST_ID_REUSED", "request_id")
    # a refusal is replayed too, even after the world changed
    refused = pb.RegisterSealRequest(request_id=rid(), resident_id="res_missing", registration_number="1",
                                     registered_on="2026-01-01")
    await expect_error(registry.RegisterSeal(refused), grpc.StatusCode.NOT_FOUND, "RESIDENT_NOT_FOUND")
    await expect_error(registry.RegisterSeal(refused), grpc.StatusCode.NOT_FOUND, "RESIDENT_NOT_FOUND")


async def test_resident_reads_own_record_but_not_another(platform):
    await with_municipalities(platform)
    me, card = await platform.add_resident(holder(), CHIYODA)
    other, _ = await platform.add_resident(holder("鈴木 一郎", sex="1"), CHIYODA)
    token = await platform.sign_in(card)
    registry = stub(platform, None)
    mine = await registry.GetResident(pb.GetResidentRequest(), metadata=bearer(token))
    assert mine.resident.resident_id == me and mine.resident.name == "山田 花子"
    assert mine.card_link.resident_id == me and not mine.card_link.HasField("unlink_time")
    explicit = await registry.GetResident(pb.GetResidentRequest(resident_id=me), metadata=bearer(token))
    assert explicit.resident == mine.resident
    await expect_error(registry.GetResident(pb.GetResidentRequest(resident_id=other), metadata=bearer(token)),
                       PD, "NOT_OWN_RECORD")
    await expect_error(registry.ListResidents(pb.ListResidentsRequest(municipality_code=CHIYODA),
                                              metadata=bearer(token)), PD, "CALLER_NOT_ALLOWED")
    await expect_error(registry.GetResident(pb.GetResidentRequest(resident_id=me)),
                       grpc.StatusCode.UNAUTHENTICATED)


async def test_list_residents_pages_without_duplicates_or_gaps(platform):
    await with_municipalities(platform)
    registry, chuo = stub(platform), stub(platform, CHUO)
    made = set()
    for i in range(23):
        made.add((await create(registry, name=f"住民 {i}", household_id="hh_big" if i % 2 else "")).resident_id)
    await create(chuo, lgcode=CHUO)  # another municipality's resident never shows up
    seen, token, pages = [], "", 0
    while True:
        page = await registry.ListResidents(pb.ListResidentsRequest(municipality_code=CHIYODA, page_size=5,
                                                                    page_token=token))
        pages += 1
        assert len(page.residents) <= 5
        seen += [r.resident_id for r in page.residents]
        token = page.next_page_token
        if not token:
            break
        assert pages < 10
    assert pages == 5
    assert len(seen) == len(set(seen)) == 23 and set(seen) == made
    assert seen == sorted(seen)
    household = await registry.ListResidents(pb.ListResidentsRequest(municipality_code=CHIYODA,
                                                                     household_id="hh_big", page_size=100))
    assert len(household.residents) == 11 and all(r.household_id == "hh_big" for r in household.residents)
    await expect_error(registry.ListResidents(pb.ListResidentsRequest(municipality_code=CHIYODA,
                                                                      page_token="garbage!")), IA, field="page_token")
    await expect_error(registry.ListResidents(pb.ListResidentsRequest(municipality_code=CHIYODA, page_size=-1)),
                       IA, field="page_size")


async def test_household_head_moves_with_the_flag(platform):
    await with_municipalities(platform)
    registry = stub(platform)
    head = await create(registry, household_id="hh_1", household_head=True, relationship="世帯主")
    spouse = await create(registry, name="佐藤 恵", sex=2, household_id="hh_1", relationship="妻")
    assert not spouse.household_head
    promoted = pb.Resident()
    promoted.CopyFrom(spouse)
    promoted.household_head, promoted.relationship = True, "世帯主"
    await registry.UpsertResident(pb.UpsertResidentRequest(request_id=rid(), resident=promoted, expected_version=1))
    async with platform.db.read() as tx:
        assert await tx.scalar("SELECT head_resident_id FROM households WHERE household_id='hh_1'") == spouse.resident_id
    old = await registry.GetResident(pb.GetResidentRequest(resident_id=head.resident_id))
    assert not old.resident.household_head
    # a household of another municipality cannot be joined
    await expect_error(stub(platform, CHUO).UpsertResident(pb.UpsertResidentRequest(
        request_id=rid(), resident=resident(lgcode=CHUO, household_id="hh_1"))),
        grpc.StatusCode.FAILED_PRECONDITION, "HOUSEHOLD_OF_OTHER_MUNICIPALITY")


async def test_municipality_list_and_get(platform):
    from server.config import Settings
    from server.registry.municipalities import load_municipalities
    await load_municipalities(platform.db, Settings().municipalities_csv)
    anyone = stub(platform, None)
    got = await anyone.GetMunicipality(pb.GetMunicipalityRequest(code="131016"))
    assert got.municipality.name == "千代田区" and got.municipality.prefecture == "東京都"
    await expect_error(anyone.GetMunicipality(pb.GetMunicipalityRequest(code="131017")), IA, field="code")
    await expect_error(anyone.GetMunicipality(pb.GetMunicipalityRequest(code="999997")), grpc.StatusCode.NOT_FOUND,
                       "MUNICIPALITY_NOT_FOUND")
    codes, token = [], ""
    while True:
        page = await anyone.ListMunicipalities(pb.ListMunicipalitiesRequest(prefecture="東京都", page_size=20,
                                                                           page_token=token))
        codes += [m.code for m in page.municipalities]
        assert all(m.prefecture == "東京都" for m in page.municipalities)
        token = page.next_page_token
        if not token:
            break
    assert len(codes) == len(set(codes)) and "131016" in codes and codes == sorted(codes)
    kana = await anyone.ListMunicipalities(pb.ListMunicipalitiesRequest(keyword="さっぽろ"))
    assert kana.municipalities and all(m.code.startswith("01") for m in kana.municipalities)
