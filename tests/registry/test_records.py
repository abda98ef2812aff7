"""Seal registrations, tax records, family registers, moves and bars: what is stored is what others read."""

from __future__ import annotations

import grpc
from onestop.registry.v1 import registry_pb2 as pb

from server.testing import bearer, holder
from tests.helpers import expect_error
from tests.registry.support import CHIYODA, CHUO, SAPPORO, create, rid, stub, with_municipalities

IA = grpc.StatusCode.INVALID_ARGUMENT
NF = grpc.StatusCode.NOT_FOUND
FP = grpc.StatusCode.FAILED_PRECONDITION


async def live_seals(platform, resident_id):
    async with platform.db.read() as tx:
        return await tx.all("SELECT * FROM seal_registrations WHERE resident_id = ? AND abolished_at_ms IS NULL",
                            (resident_id,))


async def test_seal_abolition_is_visible_immediately(platform):
    await with_municipalities(platform)
    registry = stub(platform)
    a = await create(registry)
    registered = await registry.RegisterSeal(pb.RegisterSealRequest(
        request_id=rid(), resident_id=a.resident_id, registration_number="S-0001", registered_on="2020-05-01"))
    assert registered.registration.registration_number == "S-0001"
    assert not registered.registration.HasField("abolish_time")
    shown = await registry.GetResident(pb.GetResidentRequest(resident_id=a.resident_id))
    assert shown.seal.registration_id == registered.registration.registration_id
    await expect_error(registry.RegisterSeal(pb.RegisterSealRequest(
        request_id=rid(), resident_id=a.resident_id, registration_number="S-0002", registered_on="2021-01-01")),
        grpc.StatusCode.ALREADY_EXISTS, "SEAL_ALREADY_REGISTERED")

    abolished = await registry.AbolishSeal(pb.AbolishSealRequest(request_id=rid(), resident_id=a.resident_id))
    assert abolished.registration.HasField("abolish_time")
    assert await live_seals(platform, a.resident_id) == []  # what the kiosk reads, at once
    shown = await registry.GetResident(pb.GetResidentRequest(resident_id=a.resident_id))
    assert not shown.HasField("seal")
    await expect_error(registry.AbolishSeal(pb.AbolishSealRequest(request_id=rid(), resident_id=a.resident_id)),
                       NF, "SEAL_NOT_REGISTERED")
    # a new registration after abolition is allowed; only one is ever in force
    await registry.RegisterSeal(pb.RegisterSealRequest(request_id=rid(), resident_id=a.resident_id,
                                                       registration_number="S-0003", registered_on="2026-12-03"))
    assert [r["registration_number"] for r in await live_seals(platform, a.resident_id)] == ["S-0003"]
    await expect_error(registry.RegisterSeal(pb.RegisterSealRequest(
        request_id=rid(), resident_id=a.resident_id, registration_number="bad number!", registered_on="2026-12-04")),
        IA, field="registration_number")
    await expect_error(stub(platform, CHUO).AbolishSeal(pb.AbolishSealRequest(
        request_id=rid(), resident_id=a.resident_id)), grpc.StatusCode.PERMISSION_DENIED, "OTHER_MUNICIPALITY")
    assert len(await live_seals(platform, a.resident_id)) == 1


async def test_tax_records_put_replace_and_list(platform):
    await with_municipalities(platform)
    registry = stub(platform)
    a = await create(registry)
    for year in (2023, 2024, 2025):
        await registry.PutTaxRecord(pb.PutTaxRecordRequest(request_id=rid(), record=pb.TaxRecord(
            resident_id=a.resident_id, fiscal_year=year, total_income=5_000_000, taxable_income=3_000_000,
            municipal_tax=180_000, prefectural_tax=120_000, dependents=1)))
    replaced = await registry.PutTaxRecord(pb.PutTaxRecordRequest(request_id=rid(), record=pb.TaxRecord(
        resident_id=a.resident_id, fiscal_year=2025, total_income=6_000_000, taxable_income=4_000_000,
        municipal_tax=240_000, prefectural_tax=160_000, dependents=2)))
    assert replaced.record.municipal_tax == 240_000
    async with platform.db.read() as tx:
        row = await tx.one("SELECT * FROM tax_records WHERE resident_id = ? AND fiscal_year = 2025", (a.resident_id,))
        assert await tx.scalar("SELECT count(*) FROM tax_records") == 3
    assert (row["total_income"], row["taxable_income"], row["prefectural_tax"], row["dependents"]) == (
        6_000_000, 4_000_000, 160_000, 2)
    first = await registry.ListTaxRecords(pb.ListTaxRecordsRequest(resident_id=a.resident_id, page_size=2))
    rest = await registry.ListTaxRecords(pb.ListTaxRecordsRequest(resident_id=a.resident_id, page_size=2,
                                                                  page_token=first.next_page_token))
    assert [r.fiscal_year for r in first.records] == [2025, 2024]
    assert [r.fiscal_year for r in rest.records] == [2023] and rest.next_page_token == ""
    await expect_error(registry.PutTaxRecord(pb.PutTaxRecordRequest(request_id=rid(), record=pb.TaxRecord(
        resident_id=a.resident_id, fiscal_year=2025, total_income=100, taxable_income=200, municipal_tax=-1))),
        IA, field="record.taxable_income")


async def test_resident_sees_own_tax_records_only(platform):
    await with_municipalities(platform)
    me, card = await platform.add_resident(holder(), CHIYODA)
    other, _ = await platform.add_resident(holder("鈴木 一郎", sex="1"), CHIYODA)
    registry = stub(platform)
    await registry.PutTaxRecord(pb.PutTaxRecordRequest(request_id=rid(), record=pb.TaxRecord(
        resident_id=me, fiscal_year=2025, total_income=1, taxable_income=1)))
    token = await platform.sign_in(card)
    mine = await stub(platform, None).ListTaxRecords(pb.ListTaxRecordsRequest(), metadata=bearer(token))
    assert [r.fiscal_year for r in mine.records] == [2025]
    await expect_error(stub(platform, None).ListTaxRecords(pb.ListTaxRecordsRequest(resident_id=other),
                                                          metadata=bearer(token)),
                       grpc.StatusCode.PERMISSION_DENIED, "NOT_OWN_RECORD")


async def test_family_register_and_honseki(platform):
    await with_municipalities(platform)
    chiyoda, sapporo = stub(platform, CHIYODA), stub(platform, SAPPORO)
    a = await create(chiyoda, name="佐藤 健")
    register = pb.FamilyRegister(
        honseki_code=SAPPORO, honseki_address="北海道札幌市中央区北1条西2丁目", head_name="佐藤 健",
        pending_notification=True, members=[
            pb.FamilyRegisterMember(member_no=1, resident_id=a.resident_id, name="佐藤 健", birth_date="1985-06-01",
                                    sex=pb.SEX_MALE, relationship="筆頭者"),
            pb.FamilyRegisterMember(member_no=2, name="佐藤 恵", birth_date="1987-02-03", sex=pb.SEX_FEMALE,
                                    relationship="妻"),
        ])
    # only the 本籍地 municipality keeps the register
    await expect_error(chiyoda.PutFamilyRegister(pb.PutFamilyRegisterRequest(request_id=rid(), register=register)),
                       grpc.StatusCode.PERMISSION_DENIED, "OTHER_MUNICIPALITY")
    put = await sapporo.PutFamilyRegister(pb.PutFamilyRegisterRequest(request_id=rid(), register=register))
    register_id = put.register.register_id
    assert put.register.pending_notification and len(put.register.members) == 2
    shown = await chiyoda.GetResident(pb.GetResidentRequest(resident_id=a.resident_id))
    assert shown.resident.honseki_code == SAPPORO and shown.resident.family_register_id == register_id
    async with platform.db.read() as tx:
        members = await tx.all("SELECT * FROM family_register_members WHERE register_id = ? ORDER BY member_no",
                               (register_id,))
        row = await tx.one("SELECT * FROM family_registers WHERE register_id = ?", (register_id,))
    assert [(m["member_no"], m["relationship"], m["resident_id"]) for m in members] == [
        (1, "筆頭者", a.resident_id), (2, "妻", None)]
    assert (row["honseki_code"], row["pending_notification"]) == (SAPPORO, 1)
    # the notification is reflected: flag off; the spouse removed (除籍)
    update = pb.FamilyRegister()
    update.CopyFrom(put.register)
    update.pending_notification = False
    update.members[1].removed = True
    again = await sapporo.PutFamilyRegister(pb.PutFamilyRegisterRequest(request_id=rid(), register=update))
    assert not again.register.pending_notification and again.register.members[1].removed
    got = await sapporo.GetFamilyRegister(pb.GetFamilyRegisterRequest(register_id=register_id))
    assert got.register == again.register
    await expect_error(chiyoda.GetFamilyRegister(pb.GetFamilyRegisterRequest(register_id=register_id)),
                       grpc.StatusCode.PERMISSION_DENIED, "OTHER_MUNICIPALITY")
    bad = pb.FamilyRegister()
    bad.CopyFrom(register)
    bad.members[1].member_no = 1
    bad.members[0].birth_date = "yesterday"
    await expect_error(sapporo.PutFamilyRegister(pb.PutFamilyRegisterRequest(request_id=rid(), register=bad)),
                       IA, field="register.members[1].member_no")


async def test_moves_and_bars(platform):
    await with_municipalities(platform)
    registry = stub(platform)
    a = await create(registry)

    def move(kind, date="", destination=""):
        return registry.RecordMove(pb.RecordMoveRequest(request_id=rid(), resident_id=a.resident_id, kind=kind,
                                                        date=date, destination=destination))

    await expect_error(move(pb.MOVE_KIND_UNSPECIFIED, "2026-12-10"), IA, field="kind")
    await expect_error(move(pb.MOVE_KIND_PLANNED_MOVE_OUT, "2026-12-20"), IA, field="destination")
    planned = await move(pb.MOVE_KIND_PLANNED_MOVE_OUT, "2026-12-20", "大阪府大阪市北区梅田1-1")
    assert planned.resident.status == pb.RESIDENT_STATUS_MOVING_OUT and planned.resident.moving_out_on == "2026-12-20"
    cancelled = await move(pb.MOVE_KIND_CANCEL_PLANNED_MOVE_OUT)
    assert cancelled.resident.status == pb.RESIDENT_STATUS_ACTIVE and cancelled.resident.moving_out_on == ""
    await expect_error(move(pb.MOVE_KIND_CANCEL_PLANNED_MOVE_OUT), FP, "NO_PLANNED_MOVE_OUT")
    await registry.RegisterSeal(pb.RegisterSealRequest(request_id=rid(), resident_id=a.resident_id,
                                                       registration_number="S-9", registered_on="2026-01-05"))
    done = await move(pb.MOVE_KIND_MOVE_OUT, "2026-12-21", "大阪府大阪市北区梅田1-1")
    assert await live_seals(platform, a.resident_id) == []  # 転出 abolishes the seal registration
    assert done.resident.status == pb.RESIDENT_STATUS_MOVED_OUT and done.resident.moved_out_on == "2026-12-21"
    await expect_error(move(pb.MOVE_KIND_MOVE_IN, "2026-12-22"), FP, "RESIDENT_MOVED_OUT")
    # the record is kept with its status, listed by status
    moved = await registry.ListResidents(pb.ListResidentsRequest(municipality_code=CHIYODA,
                                                                 status=pb.RESIDENT_STATUS_MOVED_OUT))
    assert [r.resident_id for r in moved.residents] == [a.resident_id]
    await expect_error(registry.RegisterSeal(pb.RegisterSealRequest(
        request_id=rid(), resident_id=a.resident_id, registration_number="1", registered_on="2026-01-01")),
        FP, "RESIDENT_NOT_ACTIVE")

    b = await create(registry, name="田中 一")
    bars = await registry.SetIssuanceBars(pb.SetIssuanceBarsRequest(request_id=rid(), resident_id=b.resident_id,
                                                                    dv_protection=True))
    assert bars.resident.dv_protection and bars.resident.status == pb.RESIDENT_STATUS_ACTIVE
    await expect_error(registry.SetIssuanceBars(pb.SetIssuanceBarsRequest(request_id=rid(),
                                                                          resident_id=b.resident_id)),
                       IA, field="dv_protection")
    await registry.RegisterSeal(pb.RegisterSealRequest(request_id=rid(), resident_id=b.resident_id,
                                                       registration_number="S-10", registered_on="2026-01-05"))
    dead = await registry.SetIssuanceBars(pb.SetIssuanceBarsRequest(request_id=rid(), resident_id=b.resident_id,
                                                                    deceased_on="2026-12-01"))
    assert await live_seals(platform, b.resident_id) == []
    assert dead.resident.status == pb.RESIDENT_STATUS_DECEASED and dead.resident.deceased_on == "2026-12-01"
    assert dead.resident.dv_protection
    off = await registry.SetIssuanceBars(pb.SetIssuanceBarsRequest(request_id=rid(), resident_id=b.resident_id,
                                                                   dv_protection=False))
    assert not off.resident.dv_protection and off.resident.status == pb.RESIDENT_STATUS_DECEASED
    async with platform.db.read() as tx:
        row = await tx.one("SELECT status, deceased_on, dv_protection FROM residents WHERE resident_id = ?",
                           (b.resident_id,))
    assert tuple(row) == ("deceased", "2026-12-01", 0)
    await expect_error(registry.RecordMove(pb.RecordMoveRequest(
        request_id=rid(), resident_id=b.resident_id, kind=pb.MOVE_KIND_MOVE_OUT, date="2026-12-02",
        destination="x")), FP, "RESIDENT_DECEASED")


async def test_an_update_without_honseki_keeps_the_family_register_one(platform):
    await with_municipalities(platform)
    chiyoda, sapporo = stub(platform, CHIYODA), stub(platform, SAPPORO)
    a = await create(chiyoda, moved_in_on="2020-04-01")
    await sapporo.PutFamilyRegister(pb.PutFamilyRegisterRequest(request_id=rid(), register=pb.FamilyRegister(
        honseki_code=SAPPORO, honseki_address="北海道札幌市中央区1", head_name="佐藤 健",
        members=[pb.FamilyRegisterMember(member_no=1, resident_id=a.resident_id, name="佐藤 健",
                                         birth_date="1985-06-01", sex=pb.SEX_MALE, relationship="筆頭者")])))
    current = (await chiyoda.GetResident(pb.GetResidentRequest(resident_id=a.resident_id))).resident
    changed = pb.Resident()
    changed.CopyFrom(current)
    changed.honseki_code, changed.moved_in_on, changed.address = "", "", "東京都千代田区新住所"
    reply = await chiyoda.UpsertResident(pb.UpsertResidentRequest(request_id=rid(), resident=changed,
                                                                  expected_version=current.version))
    assert reply.resident.address == "東京都千代田区新住所"
    assert (reply.resident.honseki_code, reply.resident.moved_in_on) == (SAPPORO, "2020-04-01")
    assert reply.resident.family_register_id == current.family_register_id != ""


async def test_record_move_with_a_stale_version_changes_nothing(platform):
    await with_municipalities(platform)
    registry = stub(platform)
    a = await create(registry)
    request = pb.RecordMoveRequest(request_id=rid(), resident_id=a.resident_id, kind=pb.MOVE_KIND_PLANNED_MOVE_OUT,
                                   date="2026-12-24", destination="京都府京都市", expected_version=1)
    moved = await registry.RecordMove(request)
    assert moved.resident.version == 2
    assert await registry.RecordMove(request) == moved  # a retry: the first outcome, no second change
    await expect_error(registry.RecordMove(pb.RecordMoveRequest(
        request_id=rid(), resident_id=a.resident_id, kind=pb.MOVE_KIND_MOVE_OUT, date="2026-12-24",
        destination="京都府京都市", expected_version=1)), grpc.StatusCode.ABORTED, "VERSION_CONFLICT")
    async with platform.db.read() as tx:
        row = await tx.one("SELECT status, version FROM residents WHERE resident_id = ?", (a.resident_id,))
    assert tuple(row) == ("moving_out", 2)
