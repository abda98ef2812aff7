"""Guards over the points area's wiring: what must never exist, and what every RPC must have."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from onestop.points.v1 import points_pb2 as pb

import server.points.service  # noqa: F401  (registers the rules)
from server import authz
from server.points import ledger

from .kit import fresh_ledger

PROTO = Path(__file__).resolve().parents[2] / "protos" / "onestop" / "points" / "v1" / "points.proto"
SERVICE = pb.DESCRIPTOR.services_by_name["PointsService"]
# Lending or purchase history (図書の貸出し履歴や物品の購入履歴) and personal numbers: never kept.
FORBIDDEN = re.compile(r"history|lend|loan|borrow|purchase|bought|item|product|isbn|book|basket|receipt_line|"
                       r"goods|my_?number|individual_number|kojin", re.I)


def _all_fields(descriptor, seen=None):
    seen = seen if seen is not None else set()
    if descriptor.full_name in seen:
        return
    seen.add(descriptor.full_name)
    for f in descriptor.fields:
        yield descriptor.full_name, f.name
        if f.message_type is not None and f.message_type.full_name.startswith("onestop."):
            yield from _all_fields(f.message_type, seen)


def test_no_lending_or_purchase_history_in_the_schema(tmp_path):
    conn = fresh_ledger(tmp_path / "g.db")
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND (name LIKE 'points_%' OR name IN ('mykeys', 'memberships'))")]
    assert {"mykeys", "memberships", "points_transfers", "points_accounts"} <= set(tables)
    for table in tables:
        assert not FORBIDDEN.search(table), table
        for column in conn.execute(f"PRAGMA table_info({table})"):
            assert not FORBIDDEN.search(column["name"]), f"{table}.{column['name']}"


def test_no_lending_or_purchase_history_in_the_api():
    fields = [f"{m}.{n}" for message in pb.DESCRIPTOR.message_types_by_name.values() for m, n in _all_fields(message)]
    assert fields
    assert [f for f in fields if FORBIDDEN.search(f.split(".")[-1])] == []
    assert not [m for m in SERVICE.methods if FORBIDDEN.search(m.name)]


def test_no_reverse_conversion_in_the_api():
    names = [m.name for m in SERVICE.methods]
    assert "ConvertPartnerPoints" in names
    backwards = [n for n in names if re.search(r"reverse|revert|refund|back|to_?partner", n, re.I)]
    assert backwards == []
    # The only RPCs that speak of partners: bind a member account, set a rate, convert INTO municipal points.
    assert sorted(n for n in names if "Partner" in n) == ["BindPartnerAccount", "ConvertPartnerPoints",
                                                          "SetPartnerRate"]
    convert = SERVICE.methods_by_name["ConvertPartnerPoints"]
    assert "partner_points" in {f.name for f in convert.input_type.fields}
    assert "partner_points" not in {f.name for f in convert.output_type.fields}


def test_the_ledger_refuses_to_credit_a_partner(tmp_path):
    conn = fresh_ledger(tmp_path / "g.db")
    conn.execute("BEGIN")
    partner = ledger.account_id(conn, "partner", "card-co")
    issuance = ledger.account_id(conn, "issuance", "", "131016")
    with pytest.raises(Exception) as refused:
        ledger.post(conn, issuance, partner, 10, "grant", "", 0)
    assert getattr(refused.value, "reason", "") == "CONVERSION_IS_ONE_WAY"


def test_transfers_are_immutable_and_holds_resolve_once(tmp_path):
    conn = fresh_ledger(tmp_path / "g.db")
    conn.execute("BEGIN")
    issuance = ledger.account_id(conn, "issuance", "", "131016")
    expired = ledger.account_id(conn, "expired", "", "131016")
    ledger.post(conn, issuance, expired, 10, "expire", "", 0)
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        conn.execute("UPDATE points_transfers SET amount = 11")
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        conn.execute("DELETE FROM points_transfers")
    conn.execute("INSERT INTO points_holds (hold_id, account_id, merchant_id, amount, state, created_at_ms,"
                 " expires_at_ms) VALUES ('h', ?, 'm', 1, 'captured', 0, 1)", (issuance,))
    with pytest.raises(sqlite3.DatabaseError, match="resolves once"):
        conn.execute("UPDATE points_holds SET state = 'voided' WHERE hold_id = 'h'")


def test_every_rpc_has_a_rule_callers_errors_and_the_house_shape():
    text = PROTO.read_text("utf-8")
    for method in SERVICE.methods:
        assert authz.rule_for(f"/{SERVICE.full_name}/{method.name}") is not None, method.name
        comment = re.search(r"((?:\s*//[^\n]*\n)+)\s*rpc " + method.name + r"\(", text)
        assert comment and "Callers:" in comment.group(1) and "Errors:" in comment.group(1), method.name
        fields = {f.name for f in method.input_type.fields}
        reads = method.name.startswith(("Get", "List", "Lookup"))
        if not reads:
            assert "request_id" in fields, method.name
        if method.name.startswith("List") or method.name == "GetMerchantSettlement":
            assert {"page_size", "page_token"} <= fields, method.name
            assert "next_page_token" in {f.name for f in method.output_type.fields}, method.name


def test_the_corrections_migration_keeps_every_transfer_and_the_guards(tmp_path):
    from server.db import discover_migrations, split_statements
    from server.points.writer import connect

    conn = connect(tmp_path / "m.db")
    migrations = discover_migrations(("core", "registry", "points"))
    later = [m for m in migrations if m.area == "points" and m.version >= 2]
    assert later, "expected the 0002 corrections migration"
    for migration in [m for m in migrations if m not in later]:
        for statement in split_statements(migration.sql):
            conn.execute(statement)
    conn.execute("BEGIN")
    issuance = ledger.account_id(conn, "issuance", "", "131016")
    expired = ledger.account_id(conn, "expired", "", "131016")
    first = ledger.post(conn, issuance, expired, 10, "expire", "", 0)
    conn.execute("COMMIT")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO points_transfers (transfer_id, debit_account_id, credit_account_id, amount, code,"
                     " created_at_ms) VALUES ('x', ?, ?, 1, 'correction', 0)", (expired, issuance))
    for migration in later:
        for statement in split_statements(migration.sql):
            conn.execute(statement)
    assert [tuple(r) for r in conn.execute("SELECT transfer_id, amount, code FROM points_transfers")] == [
        (first, 10, "expire")]
    conn.execute("INSERT INTO points_transfers (transfer_id, debit_account_id, credit_account_id, amount, code,"
                 " ref, created_at_ms) VALUES ('y', ?, ?, 1, 'correction', ?, 0)", (expired, issuance, first))
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        conn.execute("UPDATE points_transfers SET amount = 2 WHERE transfer_id = 'y'")
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        conn.execute("DELETE FROM points_transfers")
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'"
                                          " AND tbl_name='points_transfers'")}
    assert {"points_transfers_debit", "points_transfers_credit", "points_transfers_ref"} <= indexes
