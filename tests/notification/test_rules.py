"""Rules fire once per child and occasion: across runs, restarts, and the daily scheduler."""

from datetime import date

import grpc
from onestop.notification.v1 import notification_pb2 as pb

from server.testing import run_platform
from tests.notification.support import LG, OTHER_LG, add_card_holder, add_person, inbox, public, refused, staff


def _fired(reply) -> dict[str, int]:
    return {o.rule: o.fired for o in reply.outcomes if o.fired}


async def _family(platform, household: str, child_birth: date, parent: str = "親") -> tuple[str, str]:
    parent_id = await add_person(platform, parent, date(1985, 1, 1), household_id=household)
    child_id = await add_person(platform, f"子{household}", child_birth, household_id=household)
    return parent_id, child_id


async def test_age_rules_at_boundaries_fire_once_across_a_restart(tmp_path, pki_template):
    # Today (the test clock) is 2026-12-03 in Japan.
    async with run_platform(tmp_path, pki_template=pki_template) as platform:
        await _family(platform, "h1", date(2026, 11, 3))   # 1 month on 12/2: in its 1st month
        await _family(platform, "h2", date(2026, 11, 4))   # 1 month on 12/3: today
        await _family(platform, "h3", date(2026, 11, 5))   # 1 month tomorrow: not yet
        _, vaccinated = await _family(platform, "h4", date(2026, 10, 4))  # 2 months today
        await add_person(platform, "他市の子", date(2026, 11, 3), household_id="h5", lgcode=OTHER_LG)
        await staff(platform).RecordVaccination(pb.RecordVaccinationRequest(
            request_id="v-1", resident_id=vaccinated, vaccine="hib", dose=1, given_on="2026-12-03"))
        first = await staff(platform).RunRules(pb.RunRulesRequest(request_id="r-1", municipality_code=LG))
        assert first.as_of == "2026-12-03"
        assert _fired(first) == {"checkup_1m": 2, "vaccine_pcv": 1, "vaccine_hepb": 1}  # hib on record: skipped
        by_rule = {o.rule: o for o in first.outcomes}
        assert by_rule["checkup_1m"].delivered == 2
        async with platform.db.read() as tx:
            body = await tx.scalar("SELECT body FROM deliveries WHERE notice_id = ? ORDER BY seq LIMIT 1",
                                   (by_rule["checkup_1m"].notice_id,))
        assert body.startswith("親 様\n子h") and "1か月児健康診査" in body
        again = await staff(platform).RunRules(pb.RunRulesRequest(request_id="r-2", municipality_code=LG))
        assert _fired(again) == {}
        retry = await staff(platform).RunRules(pb.RunRulesRequest(request_id="r-1", municipality_code=LG))
        assert retry == first  # same request id: the first outcome

    async with run_platform(tmp_path, pki_template=pki_template) as platform:  # same data directory
        after_restart = await staff(platform).RunRules(pb.RunRulesRequest(request_id="r-3", municipality_code=LG))
        assert _fired(after_restart) == {}
        scheduler = platform.server.platform.services["notification_scheduler"]
        assert await scheduler.run_daily_rules() == 2   # claimed the day for both municipalities ...
        assert await scheduler.run_daily_rules() == 0   # ... once
        platform.clock.advance(days=1)                  # 12/4: h3's child reaches 1 month
        assert await scheduler.run_daily_rules() == 2
        async with platform.db.read() as tx:
            rows = await tx.all("SELECT rule, count(*) AS n FROM rule_firings WHERE rule = 'checkup_1m'"
                                " AND municipality_code = '131016' GROUP BY rule")
            assert rows[0]["n"] == 3
            assert await tx.scalar("SELECT count(*) FROM deliveries d JOIN notices n USING (notice_id)"
                                   " WHERE n.source = 'rule' AND n.title LIKE '1か月%'") == 3


async def test_genkyo_todoke_fires_in_june_once_a_year(platform):
    parent, meta = await add_card_holder(platform, "受給 者", household_id="hh-ca")
    await add_person(platform, "子 ども", date(2020, 5, 5), household_id="hh-ca")
    await add_person(platform, "隣 人", date(1980, 5, 5), household_id="hh-other")
    stub = staff(platform)
    await stub.SetBenefitHousehold(pb.SetBenefitHouseholdRequest(
        request_id="b-1", household_id="hh-ca", program=pb.BENEFIT_PROGRAM_CHILD_ALLOWANCE, since="2020-06-01"))
    may = await stub.RunRules(pb.RunRulesRequest(request_id="g-0", municipality_code=LG, as_of="2027-05-31"))
    assert "genkyo_child_allowance" not in _fired(may)
    june = await stub.RunRules(pb.RunRulesRequest(request_id="g-1", municipality_code=LG, as_of="2027-06-01"))
    assert _fired(june)["genkyo_child_allowance"] == 1
    late_june = await stub.RunRules(pb.RunRulesRequest(request_id="g-2", municipality_code=LG, as_of="2027-06-30"))
    assert "genkyo_child_allowance" not in _fired(late_june)
    next_year = await stub.RunRules(pb.RunRulesRequest(request_id="g-3", municipality_code=LG, as_of="2028-06-10"))
    assert _fired(next_year)["genkyo_child_allowance"] == 1
    box = await inbox(platform, meta)
    bodies = [n.body for n in box.notices if n.title == "児童手当の現況届のお知らせ"]
    assert len(bodies) == 2
    assert "2028年6月30日までに" in bodies[0] and "2027年6月30日までに" in bodies[1]
    assert bodies[0].startswith("受給 者 様")


async def test_run_rules_input_and_callers(platform):
    resident, meta = await add_card_holder(platform, "住民")
    await refused(staff(platform).RunRules(pb.RunRulesRequest(request_id="q-1", municipality_code=LG,
                                                              as_of="2026-13-01")),
                  grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "as_of")
    await refused(staff(platform).RunRules(pb.RunRulesRequest(request_id="q-2", municipality_code="13101")),
                  grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "municipality_code")
    await refused(staff(platform, OTHER_LG).RunRules(pb.RunRulesRequest(request_id="q-3", municipality_code=LG)),
                  grpc.StatusCode.PERMISSION_DENIED, "OTHER_MUNICIPALITY")
    await refused(public(platform).RunRules(pb.RunRulesRequest(request_id="q-4", municipality_code=LG),
                                            metadata=meta), grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")


async def test_pregnancy_checkup_notice_once_per_accepted_pregnancy_notification(platform):
    async with platform.db.read() as tx:
        if not await tx.scalar("SELECT 1 FROM sqlite_master WHERE name = 'applications'"):
            import pytest
            pytest.skip("the application area's tables are not there")
    mother, meta = await add_card_holder(platform, "妊婦 さん")
    other = await add_person(platform, "提出 のみ", date(1992, 1, 1))
    async with platform.db.write() as tx:
        for app_id, resident, status in (("app_p1", mother, "accepted"), ("app_p2", other, "submitted")):
            await tx.execute(
                "INSERT INTO applications (application_id, resident_id, municipality_code, procedure_code, status,"
                " version, form_json, created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, ?, 1, '{}', 1, 1)",
                (app_id, resident, LG, "maternal_child_health.pregnancy_notification", status))
    stub = staff(platform)
    first = await stub.RunRules(pb.RunRulesRequest(request_id="pr-1", municipality_code=LG))
    assert _fired(first).get("pregnancy_checkup") == 1
    second = await stub.RunRules(pb.RunRulesRequest(request_id="pr-2", municipality_code=LG))
    assert "pregnancy_checkup" not in _fired(second)
    box = await inbox(platform, meta)
    assert [n.title for n in box.notices] == ["妊婦健康診査のご案内"]
    assert box.notices[0].body.startswith("妊婦 さん 様\n")


async def test_every_age_rule_fires_exactly_on_both_sides_of_its_boundaries(platform):
    """For each age rule (n months): the youngest child aged n fires, one born a day later does not;
    the oldest child still aged n fires, one born a day earlier (n+1 months) does not."""
    from datetime import timedelta

    from server.notification.ages import age_in_months, birth_range
    from server.notification.rules import AGE_RULES

    on = date(2026, 12, 3)
    age_of: dict[str, int] = {}
    for rule in AGE_RULES:
        earliest, latest = birth_range(rule.months, rule.months, on)
        assert age_in_months(latest + timedelta(days=1), on) == rule.months - 1
        assert age_in_months(earliest - timedelta(days=1), on) == rule.months + 1
        for tag, born in (("youngest", latest), ("oldest", earliest), ("too-young", latest + timedelta(days=1)),
                          ("too-old", earliest - timedelta(days=1))):
            key = f"{rule.code}-{tag}"
            child = await add_person(platform, key, born, household_id=f"h-{key}")
            await add_person(platform, f"親-{key}", date(1985, 1, 1), household_id=f"h-{key}")
            age_of[child] = {"youngest": rule.months, "oldest": rule.months, "too-young": rule.months - 1,
                             "too-old": rule.months + 1}[tag]
    await staff(platform).RunRules(pb.RunRulesRequest(request_id="edge-1", municipality_code=LG,
                                                      as_of=on.isoformat()))
    async with platform.db.read() as tx:
        rows = await tx.all("SELECT rule, subject_id FROM rule_firings")
    fired: dict[str, set[str]] = {}
    for row in rows:
        fired.setdefault(row["rule"], set()).add(row["subject_id"])
    # A neighbour of one boundary may be the exact age of another rule: expect by age, not by code.
    for rule in AGE_RULES:
        assert fired.get(rule.code, set()) == {c for c, age in age_of.items() if age == rule.months}, rule.code
