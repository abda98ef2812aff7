"""Retries answered with the first outcome.

A mutating RPC carries `request_id`. `run_once` keys the work on (caller, method, request_id): the
first call runs `work` inside a write transaction and stores its response in the same transaction;
a retry gets the stored response back without running anything. A refusal (DomainError) is stored
too, so a retried failure fails the same way, even if the world has changed since.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message
from google.rpc import status_pb2

from server import context
from server.clock import Clock, to_epoch_ms
from server.db import Database, Tx
from server.errors import DeadlineExceeded, DomainError, InvalidArgument, Unavailable, from_status

M = TypeVar("M", bound=Message)
MAX_REQUEST_ID = 128
_TRANSIENT = (Unavailable, DeadlineExceeded)


def _digest(request: Message) -> bytes:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()


def check_request_id(request_id: str) -> None:
    if not request_id:
        raise InvalidArgument.field("request_id", "required: a unique id per change, reused on retries")
    if len(request_id) > MAX_REQUEST_ID or not request_id.isprintable():
        raise InvalidArgument.field("request_id", f"at most {MAX_REQUEST_ID} printable characters")


async def recall(tx: Tx, key: tuple[str, str, str], digest: bytes, response_type: type[M], *,
                 table: str = "idempotency") -> M | None:
    """The stored first outcome of (caller, method, request_id), if any; a stored refusal is raised
    again. `table` names a table of the same shape (the points ledger keeps its own)."""
    row = await tx.one(
        f"SELECT request_digest, failed, outcome FROM {table} WHERE caller=? AND method=? AND request_id=?", key
    )
    if row is None:
        return None
    if row["request_digest"] != digest:
        raise InvalidArgument.field("request_id", "already used for a different request", reason="REQUEST_ID_REUSED")
    if row["failed"]:
        status = status_pb2.Status()
        status.ParseFromString(row["outcome"])
        raise from_status(status)
    response = response_type()
    response.ParseFromString(row["outcome"])
    return response


async def run_once(
    db: Database,
    clock: Clock,
    request: Message,
    response_type: type[M],
    work: Callable[[Tx], Awaitable[M]],
    *,
    caller: str | None = None,
    method: str | None = None,
) -> M:
    """Run `work(tx)` once per (caller, method, request.request_id); replay the outcome otherwise."""
    call = context.current()
    request_id = getattr(request, "request_id")
    check_request_id(request_id)
    key = (caller or call.principal.caller_key, method or call.method, request_id)
    digest = _digest(request)
    async with db.read() as tx:
        prior = await recall(tx, key, digest, response_type)
    if prior is not None:
        return prior
    try:
        async with db.write() as tx:
            prior = await recall(tx, key, digest, response_type)
            if prior is not None:
                return prior
            response = await work(tx)
            await tx.execute(
                "INSERT INTO idempotency (caller, method, request_id, request_digest, failed, outcome, created_at_ms)"
                " VALUES (?, ?, ?, ?, 0, ?, ?)",
                (*key, digest, response.SerializeToString(), to_epoch_ms(clock.now())),
            )
            return response
    except _TRANSIENT:
        raise
    except DomainError as error:
        if error.reason == "REQUEST_ID_REUSED":
            raise
        async with db.write() as tx:
            await tx.execute(
                "INSERT OR IGNORE INTO idempotency"
                " (caller, method, request_id, request_digest, failed, outcome, created_at_ms)"
                " VALUES (?, ?, ?, ?, 1, ?, ?)",
                (*key, digest, error.to_status().SerializeToString(), to_epoch_ms(clock.now())),
            )
        raise
