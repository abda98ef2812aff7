"""A stateful property test of the ledger rules against a simple model (TigerBeetle-style auditor).

Random sequences of grants, conversions, placements, authorisations, captures, voids, donations,
expiry, sweeps, clock moves, replays and attempts to convert back run in-process against a real
SQLite file through the same path as the server (writer.apply_batch: one transaction per batch, a
savepoint per request). After every step: the sum over all accounts is zero, no resident or holding
account is below zero (holds included), every balance equals what its transfers add up to and what
its open lots hold, each account's pending equals its pending holds, and the model agrees.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from server.clock import to_epoch_ms
from server.errors import DomainError
from server.points import ledger
from server.points.writer import Job, apply_batch, digest
from server.testing import TEST_START
from onestop.points.v1 import points_pb2 as pb

from .kit import fresh_ledger

A, B = "131016", "131024"
PEOPLE = ("KEYAAAA2", "KEYBBBB3")
RESIDENCE = {"KEYAAAA2": A, "KEYBBBB3": B}
MERCHANT_LG = {"m-a": A, "m-b": B, "m-ev": A}
EVENT = "evt_support"
EVENT_MERCHANTS = {"m-ev"}
RATE_MILLI = 500


class Model:
    def __init__(self) -> None:
        self.lots: dict[tuple, list[list[int]]] = {}  # account key -> [[remaining, expires_ms, seq], ...]
        self.holding: dict[str, int] = {p: 0 for p in PEOPLE}
        self.holds: dict[str, dict] = {}
        self.conversions: dict[str, dict] = {}
        self.grants: dict[str, dict] = {}
        self.seq = 0

    def balance(self, key: tuple) -> int:
        return sum(lot[0] for lot in self.lots.get(key, []))

    def held(self, key: tuple, now: int) -> int:
        return sum(h["amount"] for h in self.holds.values()
                   if h["key"] == key and h["state"] == "pending" and h["expires"] > now)

    def credit(self, key: tuple, amount: int, expires: int) -> None:
        self.seq += 1
        self.lots.setdefault(key, []).append([amount, expires, self.seq])

    def debit(self, key: tuple, amount: int) -> None:
        for lot in sorted(self.lots[key], key=lambda x: (x[1], x[2])):
            take = min(lot[0], amount)
            lot[0] -= take
            amount -= take
        assert amount == 0


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ledger-model-"))
        self.conn = fresh_ledger(self.dir / "ledger.db")
        self.now = to_epoch_ms(TEST_START)
        self.model = Model()
        self.done: list[tuple[Job, object]] = []
        self.counter = 0

    def teardown(self) -> None:
        self.conn.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @initialize()
    def world(self) -> None:
        c = self.conn
        c.execute("BEGIN")
        for code in (A, B):
            c.execute("INSERT INTO municipalities (code, prefecture, name, name_kana) VALUES (?, '東京都', 'x', '')",
                      (code,))
        for person in PEOPLE:
            resident = "res_" + person
            c.execute("INSERT INTO residents (resident_id, municipality_code, name, birth_date, sex, address,"
                      " updated_at_ms) VALUES (?, ?, 'n', '1990-01-01', '1', 'a', 0)", (resident, RESIDENCE[person]))
            c.execute("INSERT INTO mykeys (mykey_id, resident_id, auth_issuer, auth_serial, created_at_ms)"
                      " VALUES (?, ?, 'CN=card-ca', ?, 0)", (person, resident, person.lower()))
            c.execute("INSERT INTO points_bound_accounts (kind, provider, account_ref, mykey_id, bound_at_ms)"
                      " VALUES ('partner', 'card-co', ?, ?, 0)", ("M-" + person, person))
        c.execute("INSERT INTO points_partner_rates VALUES ('card-co', ?, 0)", (RATE_MILLI,))
        c.execute("INSERT INTO points_rules VALUES (?, 3, 0)", (A,))  # A: 3 months; B: the default
        c.execute("INSERT INTO points_events VALUES (?, ?, 'support', 0)", (EVENT, A))
        c.execute("INSERT INTO points_event_merchants VALUES (?, 'm-ev')", (EVENT,))
        c.execute("COMMIT")

    # --- plumbing -------------------------------------------------------------------------------

    def run(self, method: str, request, response_type, work) -> object:
        """One request through the writer's path; returns the response or the DomainError."""
        self.counter += 1
        request.request_id = f"rq-{self.counter}"
        job = Job(("caller", method, request.request_id), digest(request), response_type, work)
        [outcome] = apply_batch(self.conn, [job], self.now)
        result = outcome.response if outcome.error is None else outcome.error
        assert outcome.error is None or isinstance(outcome.error, DomainError), outcome.error
        self.done.append((job, result))
        return result

    def snapshot(self) -> tuple:
        return (self.conn.execute("SELECT account_id, balance, pending FROM points_accounts ORDER BY 1").fetchall(),
                self.conn.execute("SELECT COUNT(*) FROM points_transfers").fetchone()[0],
                self.conn.execute("SELECT hold_id, state FROM points_holds ORDER BY 1").fetchall(),
                self.conn.execute("SELECT lot_id, remaining FROM points_lots ORDER BY 1").fetchall())

    def expiry(self, lg: str) -> int:
        return ledger.add_months(self.now, 3 if lg == A else ledger.DEFAULT_EXPIRY_MONTHS)

    # --- operations -----------------------------------------------------------------------------

    @rule(person=st.sampled_from(PEOPLE), lg=st.sampled_from((A, B)), event=st.booleans(),
          amount=st.integers(1, 500))
    def grant(self, person, lg, event, amount):
        event_id = EVENT if event and lg == A else ""
        result = self.run("Grant", pb.GrantPointsRequest(municipality_code=lg, mykey_id=person, amount=amount,
                                                         event_id=event_id), pb.GrantPointsResponse,
                          lambda conn, now: ledger.grant(conn, now, lg, person, amount, event_id))
        assert isinstance(result, pb.GrantPointsResponse), result
        self.model.credit((person, lg, event_id), amount, self.expiry(lg))
        self.model.grants[result.transfer_id] = {"key": (person, lg, event_id), "amount": amount, "corrected": 0}
        assert result.balance == self.model.balance((person, lg, event_id))

    @precondition(lambda self: self.model.grants)
    @rule(data=st.data(), amount=st.integers(0, 300))
    def correct(self, data, amount):
        """A grant corrected by a new reversing transfer, within what is left of it and still there."""
        transfer_id = data.draw(st.sampled_from(sorted(self.model.grants)))
        grant = self.model.grants[transfer_id]
        lg = grant["key"][1]
        result = self.run("Correct", pb.CorrectGrantRequest(municipality_code=lg, transfer_id=transfer_id,
                                                            amount=amount), pb.CorrectGrantResponse,
                          lambda conn, now: ledger.correct_grant(conn, now, lg, transfer_id, amount))
        left = grant["amount"] - grant["corrected"]
        take = amount or left
        key = grant["key"]
        if take <= 0 or take > left:
            assert result.reason == "CORRECTION_EXCEEDS_GRANT", result
        elif self.model.balance(key) - self.model.held(key, self.now) < take:
            assert result.reason == "INSUFFICIENT_FUNDS", result
        else:
            assert isinstance(result, pb.CorrectGrantResponse), result
            self.model.debit(key, take)
            grant["corrected"] += take
            assert result.balance == self.model.balance(key)

    @rule(person=st.sampled_from(PEOPLE), points=st.integers(1, 400))
    def convert(self, person, points):
        result = self.run("Convert", pb.ConvertPartnerPointsRequest(member_account="M-" + person,
                                                                    partner_points=points),
                          pb.ConvertPartnerPointsResponse,
                          lambda conn, now: ledger.convert(conn, now, "card-co", "M-" + person, points))
        municipal = points * RATE_MILLI // 1000
        if municipal == 0:
            assert result.reason == "CONVERTS_TO_ZERO"
            return
        assert result.municipal_points == municipal
        self.model.holding[person] += municipal
        self.model.conversions[result.conversion_id] = {
            "person": person, "amount": municipal, "until": self.now + 14 * 86_400_000, "placed": False}

    @precondition(lambda self: self.model.conversions)
    @rule(data=st.data(), lg=st.sampled_from((A, B)))
    def choose(self, data, lg):
        conversion_id = data.draw(st.sampled_from(sorted(self.model.conversions)))
        conv = self.model.conversions[conversion_id]
        resident = "res_" + conv["person"]
        result = self.run("Choose", pb.ChooseMunicipalityRequest(conversion_id=conversion_id, municipality_code=lg),
                          pb.ChooseMunicipalityResponse,
                          lambda conn, now: ledger.choose_municipality(conn, now, resident, conversion_id, lg))
        if conv["placed"]:
            assert result.reason == "ALREADY_PLACED"
        elif self.now >= conv["until"]:
            assert result.reason == "HOLDING_PERIOD_OVER"
        else:
            assert isinstance(result, pb.ChooseMunicipalityResponse), result
            self.place(conversion_id, lg)

    def place(self, conversion_id, lg):
        conv = self.model.conversions[conversion_id]
        conv["placed"] = True
        self.model.holding[conv["person"]] -= conv["amount"]
        self.model.credit((conv["person"], lg, ""), conv["amount"], self.expiry(lg))

    @rule(person=st.sampled_from(PEOPLE), lg=st.sampled_from((A, B)), event=st.booleans(),
          merchant=st.sampled_from(sorted(MERCHANT_LG)), amount=st.integers(1, 400))
    def authorize(self, person, lg, event, merchant, amount):
        event_id = EVENT if event and lg == A else ""
        result = self.run("Authorize", pb.AuthorizeRedemptionRequest(municipality_code=lg, event_id=event_id,
                                                                     amount=amount),
                          pb.AuthorizeRedemptionResponse,
                          lambda conn, now: ledger.authorize(conn, now, merchant, MERCHANT_LG[merchant], person, lg,
                                                             event_id, amount))
        key = (person, lg, event_id)
        available = self.model.balance(key) - self.model.held(key, self.now)
        if event_id and merchant not in EVENT_MERCHANTS:
            assert result.reason == "EVENT_ONLY_MERCHANT"
        elif not event_id and MERCHANT_LG[merchant] != lg:
            assert result.reason == "MERCHANT_NOT_IN_MUNICIPALITY"
        elif available < amount:
            assert result.reason == "INSUFFICIENT_FUNDS", result
        else:
            assert isinstance(result, pb.AuthorizeRedemptionResponse), result
            assert result.available == available - amount
            self.model.holds[result.hold_id] = {"key": key, "amount": amount, "merchant": merchant,
                                                "state": "pending", "expires": self.now + ledger.HOLD_TTL_MS}

    @rule(person=st.sampled_from(PEOPLE), lg=st.sampled_from((A, B)),
          amounts=st.lists(st.integers(1, 300), min_size=2, max_size=5))
    def authorize_batch(self, person, lg, amounts):
        """Several holds on one balance in ONE group-committed batch: the ones that fit, in order."""
        merchant = "m-a" if lg == A else "m-b"
        jobs = []
        for amount in amounts:
            self.counter += 1
            request = pb.AuthorizeRedemptionRequest(request_id=f"rq-{self.counter}", municipality_code=lg,
                                                    amount=amount)
            jobs.append(Job(("caller", "Authorize", request.request_id), digest(request),
                            pb.AuthorizeRedemptionResponse,
                            lambda conn, now, amount=amount: ledger.authorize(conn, now, merchant, lg, person, lg, "",
                                                                              amount)))
        outcomes = apply_batch(self.conn, jobs, self.now)
        key = (person, lg, "")
        for job, amount, outcome in zip(jobs, amounts, outcomes):
            available = self.model.balance(key) - self.model.held(key, self.now)
            result = outcome.response if outcome.error is None else outcome.error
            self.done.append((job, result))
            if available < amount:
                assert outcome.error is not None and outcome.error.reason == "INSUFFICIENT_FUNDS", outcome.error
            else:
                assert outcome.error is None, outcome.error
                self.model.holds[result.hold_id] = {"key": key, "amount": amount, "merchant": merchant,
                                                    "state": "pending", "expires": self.now + ledger.HOLD_TTL_MS}

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data(), capture=st.booleans())
    def resolve(self, data, capture):
        hold_id = data.draw(st.sampled_from(sorted(self.model.holds)))
        hold = self.model.holds[hold_id]
        merchant = hold["merchant"]
        if capture:
            result = self.run("Capture", pb.CaptureRedemptionRequest(hold_id=hold_id), pb.CaptureRedemptionResponse,
                              lambda conn, now: ledger.capture(conn, now, merchant, hold_id))
        else:
            result = self.run("Void", pb.VoidRedemptionRequest(hold_id=hold_id), pb.VoidRedemptionResponse,
                              lambda conn, now: ledger.void(conn, now, merchant, hold_id))
        expected = {"captured": "ALREADY_CAPTURED", "voided": "ALREADY_VOIDED", "expired": "HOLD_EXPIRED"}
        if hold["state"] == "pending" and self.now >= hold["expires"]:
            hold["state"] = "expired"  # lazily, as the ledger does
        if hold["state"] != "pending":
            assert result.reason == expected[hold["state"]], result
            return
        assert not isinstance(result, DomainError), result
        hold["state"] = "captured" if capture else "voided"
        if capture:
            self.model.debit(hold["key"], hold["amount"])

    @rule(person=st.sampled_from(PEOPLE), lg=st.sampled_from((A, B)), amount=st.integers(1, 300))
    def donate(self, person, lg, amount):
        resident = "res_" + person
        result = self.run("Donate", pb.DonateToEventRequest(municipality_code=lg, event_id=EVENT, amount=amount),
                          pb.DonateToEventResponse,
                          lambda conn, now: ledger.donate(conn, now, resident, lg, EVENT, amount))
        key = (person, lg, "")
        if self.model.balance(key) - self.model.held(key, self.now) < amount:
            assert result.reason == "INSUFFICIENT_FUNDS"
        else:
            assert isinstance(result, pb.DonateToEventResponse), result
            self.model.debit(key, amount)

    @rule(minutes=st.sampled_from((1, 9, 11, 60 * 24, 60 * 24 * 15, 60 * 24 * 40)))
    def advance(self, minutes):
        self.now += minutes * 60_000

    @rule(lg=st.sampled_from((A, B)))
    def expire(self, lg):
        result = self.run("Expire", pb.ExpirePointsRequest(municipality_code=lg), pb.ExpirePointsResponse,
                          lambda conn, now: ledger.expire(conn, now, lg))
        total = 0
        for key, lots in sorted(self.model.lots.items()):
            if key[1] != lg:
                continue
            due = sum(lot[0] for lot in lots if lot[1] <= self.now)
            take = min(due, self.model.balance(key) - self.model.held(key, self.now))
            if take > 0:
                self.model.debit(key, take)
                total += take
        assert result.expired_points == total

    @rule()
    def sweep(self):
        result = self.run("Sweep", pb.SweepHoldingsRequest(), pb.SweepHoldingsResponse,
                          lambda conn, now: ledger.sweep(conn, now))
        due = [cid for cid, c in sorted(self.model.conversions.items(), key=lambda kv: kv[1]["until"])
               if not c["placed"] and c["until"] <= self.now]
        for cid in due:
            self.place(cid, RESIDENCE[self.model.conversions[cid]["person"]])
        assert result.conversions_placed == len(due)
        for hold in self.model.holds.values():
            if hold["state"] == "pending" and hold["expires"] <= self.now:
                hold["state"] = "expired"

    @precondition(lambda self: self.done)
    @rule(data=st.data())
    def replay(self, data):
        """A retried request (same key, same bytes) gets its first outcome and changes nothing."""
        job, first = data.draw(st.sampled_from(self.done))
        before = self.snapshot()
        [outcome] = apply_batch(self.conn, [Job(job.key, job.digest, job.response_type, job.work)], self.now)
        if isinstance(first, DomainError):
            assert outcome.error is not None and outcome.error.reason == first.reason
        else:
            assert outcome.error is None and outcome.response == first
        assert self.snapshot() == before

    @rule(person=st.sampled_from(PEOPLE), lg=st.sampled_from((A, B)), amount=st.integers(1, 50))
    def convert_back(self, person, lg, amount):
        """No RPC converts back; even the ledger's own post() refuses to credit a partner."""
        before = self.snapshot()

        def back(conn, now):
            source = ledger.account_id(conn, "resident", person, lg)
            return ledger.post(conn, source, ledger.account_id(conn, "partner", "card-co"), amount, "convert", "", now)

        job = Job(("caller", "Back", f"back-{self.counter}"), b"x", pb.GrantPointsResponse, back)
        self.counter += 1
        [outcome] = apply_batch(self.conn, [job], self.now)
        assert outcome.error is not None and outcome.error.reason == "CONVERSION_IS_ONE_WAY"
        self.conn.execute("DELETE FROM points_requests WHERE method = 'Back'")
        after = self.snapshot()
        assert after[0][: len(before[0])] == before[0] and after[1:] == before[1:]

    # --- invariants -----------------------------------------------------------------------------

    @invariant()
    def balanced_and_never_negative(self):
        c = self.conn
        assert c.execute("SELECT COALESCE(SUM(balance), 0) FROM points_accounts").fetchone()[0] == 0
        assert c.execute("SELECT COUNT(*) FROM points_accounts WHERE kind IN ('resident', 'holding')"
                         " AND (balance < 0 OR balance - pending < 0)").fetchone()[0] == 0

    @invariant()
    def balances_are_their_transfers_and_their_lots(self):
        c = self.conn
        rebuilt = dict(c.execute(
            "SELECT a.account_id,"
            " COALESCE((SELECT SUM(amount) FROM points_transfers WHERE credit_account_id = a.account_id), 0)"
            " - COALESCE((SELECT SUM(amount) FROM points_transfers WHERE debit_account_id = a.account_id), 0)"
            " FROM points_accounts a").fetchall())
        assert rebuilt == dict(c.execute("SELECT account_id, balance FROM points_accounts").fetchall())
        mismatched = c.execute(
            "SELECT a.account_id FROM points_accounts a WHERE a.kind = 'resident' AND a.balance <>"
            " COALESCE((SELECT SUM(remaining) FROM points_lots l WHERE l.account_id = a.account_id), 0)").fetchall()
        assert mismatched == []
        pending = c.execute(
            "SELECT a.account_id FROM points_accounts a WHERE a.pending <>"
            " COALESCE((SELECT SUM(amount) FROM points_holds h WHERE h.account_id = a.account_id"
            "           AND h.state = 'pending'), 0)").fetchall()
        assert pending == []

    @invariant()
    def model_agrees(self):
        for person in PEOPLE:
            row = self.conn.execute("SELECT balance FROM points_accounts WHERE kind='holding' AND owner=?",
                                    (person,)).fetchone()
            assert (row[0] if row else 0) == self.model.holding[person]
        for key in self.model.lots:
            row = self.conn.execute(
                "SELECT balance FROM points_accounts WHERE kind='resident' AND owner=? AND municipality_code=?"
                " AND event_id=?", key).fetchone()
            assert (row[0] if row else 0) == self.model.balance(key), key

    @invariant()
    def each_hold_resolves_once(self):
        states = dict(self.conn.execute("SELECT hold_id, state FROM points_holds").fetchall())
        assert set(states) == set(self.model.holds)
        for hold_id, hold in self.model.holds.items():
            if hold["state"] in ("captured", "voided"):
                assert states[hold_id] == hold["state"]
            captures = self.conn.execute("SELECT COUNT(*) FROM points_transfers WHERE code='capture' AND ref=?",
                                         (hold_id,)).fetchone()[0]
            assert captures == (1 if hold["state"] == "captured" else 0)


LedgerMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=30, deadline=None,
                                           suppress_health_check=[HealthCheck.too_slow])
TestLedgerModel = LedgerMachine.TestCase
