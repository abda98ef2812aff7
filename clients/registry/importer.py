"""Stream a resident CSV to RegistryService.ImportResidents in batches, resumably.

The CSV has a header row (row 1) naming ImportRow fields: resident_id, household_id, household_head,
name, name_kana, birth_date, sex, address, relationship, honseki_code, moved_in_on (only name,
birth_date, sex and address are required; unknown columns are an error). Each batch is one stream
with a request_id derived from the file's hash and the batch's rows, so a batch whose reply was lost
is answered again with its first outcome, never written twice. After each acknowledged batch the
state file `<csv>.import-state.json` records the last row acknowledged; `--resume` skips up to it.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc import aio
from onestop.registry.v1 import registry_pb2 as pb
from onestop.registry.v1 import registry_pb2_grpc

from clients.connect import machine_credentials
from clients.pki import MachineIdentity

FIELDS = ("resident_id", "household_id", "household_head", "name", "name_kana", "birth_date", "sex", "address",
          "relationship", "honseki_code", "moved_in_on")
REQUIRED = ("name", "birth_date", "sex", "address")
TRUE = {"1", "true", "yes", "y", "はい", "○"}
TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class ImportError_(Exception):
    """The file cannot be imported at all (bad header, state of another file)."""


@dataclass
class ImportReport:
    total_rows: int = 0
    sent: int = 0
    skipped: int = 0
    created: int = 0
    updated: int = 0
    acknowledged_through: int = 1
    rejected: list[tuple[int, list[tuple[str, str]]]] = field(default_factory=list)
    batches: int = 0
    complete: bool = False

    def to_json(self) -> dict:
        return {"acknowledged_through": self.acknowledged_through, "created": self.created,
                "updated": self.updated, "sent": self.sent, "rejected": self.rejected}


def state_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.name + ".import-state.json")


def read_rows(text: str) -> tuple[list[pb.ImportRow], list[tuple[int, list[tuple[str, str]]]]]:
    """(rows to send, rows rejected locally) from the CSV text; row numbers count the header as 1."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    header = [h.strip() for h in next(reader, [])]
    unknown = [h for h in header if h not in FIELDS]
    missing = [h for h in REQUIRED if h not in header]
    if not header or unknown or missing:
        raise ImportError_(f"header: unknown columns {unknown}, missing columns {missing}")
    rows, local = [], []
    for number, record in enumerate(reader, start=2):
        if not record or all(not c.strip() for c in record):
            continue
        if len(record) != len(header):
            local.append((number, [("row", f"expected {len(header)} columns, found {len(record)}")]))
            continue
        value = dict(zip(header, (c.strip() for c in record)))
        sex = value.get("sex", "")
        rows.append(pb.ImportRow(
            row_number=number, resident_id=value.get("resident_id", ""), household_id=value.get("household_id", ""),
            household_head=value.get("household_head", "").lower() in TRUE, name=value.get("name", ""),
            name_kana=value.get("name_kana", ""), birth_date=value.get("birth_date", ""),
            sex=int(sex) if sex.isascii() and sex.isdigit() and len(sex) == 1 else 0,
            address=value.get("address", ""), relationship=value.get("relationship", ""),
            honseki_code=value.get("honseki_code", ""), moved_in_on=value.get("moved_in_on", ""),
        ))
    return rows, local


def _batches(rows: list[pb.ImportRow], size: int) -> Iterator[list[pb.ImportRow]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def municipality_channel(target: str, pki_dir: Path, lgcode: str) -> aio.Channel:
    """A TLS channel presenting the municipality's client certificate from the development PKI."""
    return aio.secure_channel(target, machine_credentials(pki_dir, MachineIdentity("municipality", lgcode, {})))


async def _send(stub, request_id: str, lgcode: str, batch: list[pb.ImportRow], attempts: int = 3):
    for attempt in range(attempts):
        def messages():
            for i, row in enumerate(batch):
                yield pb.ImportResidentsRequest(request_id=request_id if i == 0 else "",
                                                municipality_code=lgcode if i == 0 else "", row=row)
        try:
            return await stub.ImportResidents(messages(), timeout=120)
        except aio.AioRpcError as error:
            if error.code() not in TRANSIENT or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5 * 2 ** attempt)  # the same request_id: a retry replays, never doubles
    raise AssertionError("unreachable")


async def import_file(csv_path: Path, lgcode: str, channel: aio.Channel, *, resume: bool = False,
                      batch_size: int = 500, max_batches: int | None = None,
                      progress: Callable[[ImportReport, list[pb.ImportRow]], None] | None = None) -> ImportReport:
    """Import `csv_path` for `lgcode`; returns the report (also kept in the state file)."""
    raw = csv_path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    rows, local = read_rows(raw.decode("utf-8"))
    report = ImportReport(total_rows=len(rows) + len(local))
    report.rejected += [(n, list(v)) for n, v in local]
    state_file = state_path(csv_path)
    if resume and state_file.exists():
        state = json.loads(state_file.read_text("utf-8"))
        if state.get("file_sha256") != digest or state.get("lgcode") != lgcode:
            raise ImportError_("the state file belongs to another file or municipality; run without --resume")
        report.acknowledged_through = state["acknowledged_through"]
        report.created, report.updated, report.sent = state["created"], state["updated"], state["sent"]
        report.rejected = [(n, [tuple(v) for v in vs]) for n, vs in state["rejected"]]
    pending = [r for r in rows if r.row_number > report.acknowledged_through]
    report.skipped = len(rows) - len(pending)
    stub = registry_pb2_grpc.RegistryServiceStub(channel)
    for batch in _batches(pending, max(1, min(batch_size, 5_000))):
        if max_batches is not None and report.batches >= max_batches:
            break
        first, last = batch[0].row_number, batch[-1].row_number
        request_id = f"import-{digest[:24]}-{lgcode}-{first}-{last}"
        reply = await _send(stub, request_id, lgcode, batch)
        report.batches += 1
        report.sent += reply.received
        report.created += reply.created
        report.updated += reply.updated
        report.rejected += [(r.row_number, [(v.field, v.description) for v in r.violations]) for r in reply.rejected]
        report.acknowledged_through = reply.last_row_number
        state_file.write_text(json.dumps({"file_sha256": digest, "lgcode": lgcode, **report.to_json()},
                                         ensure_ascii=False), "utf-8")
        if progress:
            progress(report, batch)
    report.rejected.sort()
    report.complete = not pending or report.acknowledged_through >= pending[-1].row_number
    return report
