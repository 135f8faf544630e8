"""The hot path's writes (claims, call journal rows, settles with records) as operations that apply many at once,
in one transaction, with SQLAlchemy Core statements built once and cached (gen.store.group_commit gathers them).

Every guarantee of a single write holds for each operation in a batch: a claim moves a unit to running under a new
lease token only if it is claimable; a call row is written as the journal's only while its unit's lease is the one
it names (otherwise kept for its cost, never replayed, and the operation's result is LeaseLost); a settle stores
the unit's records once per key and moves its state only under its lease (LeaseLost otherwise). A failed batch
rolls back as a whole: nothing of it was written, so each operation can be applied again on its own.
"""
from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Union

from sqlalchemy import bindparam, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from gen.errors import LeaseLost
from gen.store.models import Call, Record, Unit, UnitState, utcnow
from gen.types import NewRecord

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

LATE_CALL = "answered after this worker lost the unit's lease: kept for its cost, never replayed"


@dataclass
class Claim:
    """Move a unit of `job_id` to running under a new lease. Result: its row (attribute access), or None."""

    unit_id: int
    job_id: str | None
    worker: str | None
    lease_seconds: float


@dataclass
class AddCall:
    """One teacher call's journal row (`values`: the calls table's columns). With `fence` (unit id, lease token),
    written as the journal's only under that lease. Result: the call's id, or LeaseLost."""

    values: dict[str, Any]
    fence: tuple[int, int] | None = None


@dataclass
class Settle:
    """Store a unit's records (the first of each key; a key the job already has is a duplicate) and move it to
    `state`, under the lease `token`. Result: (inserted, duplicates), or LeaseLost."""

    job_id: str
    unit_id: int
    records: list[NewRecord]
    call_ids: list[int]
    token: int | None = None
    state: str = UnitState.DONE
    error: str | None = None
    raw: str | None = None


@dataclass
class Finish:
    """Settle a unit without records (failed, back to pending, ...). Result: True, or False if `token` is no
    longer the unit's lease."""

    unit_id: int
    state: str
    token: int | None = None
    error: str | None = None
    raw: str | None = None
    duplicates: int = 0


Op = Union[Claim, AddCall, Settle, Finish]


@dataclass
class _Batch:
    claims: list[tuple[int, Claim]] = field(default_factory=list)
    calls: list[tuple[int, AddCall]] = field(default_factory=list)
    settles: list[tuple[int, Settle]] = field(default_factory=list)
    finishes: list[tuple[int, Finish]] = field(default_factory=list)


def apply(conn: "Connection", dialect: str, ops: list[Op]) -> list[Any]:
    """Apply `ops` on `conn` (inside the caller's transaction). Returns one result per op, in order: a value, or
    the LeaseLost exception that op's fence raised (the others still apply)."""
    results: list[Any] = [None] * len(ops)
    batch = _Batch()
    by_kind = {Claim: batch.claims, AddCall: batch.calls, Settle: batch.settles, Finish: batch.finishes}
    for i, op in enumerate(ops):
        by_kind[type(op)].append((i, op))
    now = utcnow()
    if batch.claims:
        _claim(conn, batch.claims, results, now)
    if batch.calls:
        _add_calls(conn, dialect, batch.calls, results, now)
    if batch.settles:
        _settle(conn, dialect, batch.settles, results, now)
    for i, op in batch.finishes:
        results[i] = _finish(conn, op, now)
    return results


# claims -----------------------------------------------------------------------------------------------------
@functools.cache
def _claim_statement(with_job: bool):  # noqa: ANN202
    units = Unit.__table__
    claimable = units.c.state.in_((UnitState.PENDING, UnitState.FAILED)) \
        | ((units.c.state == UnitState.RUNNING) & (units.c.lease_until < bindparam("b_now")))
    statement = update(units).where(units.c.id.in_(bindparam("b_ids", expanding=True)), claimable)
    if with_job:
        statement = statement.where(units.c.job_id == bindparam("b_job"))
    return statement.values(
        state=UnitState.RUNNING, attempts=units.c.attempts + 1, worker=bindparam("b_worker"),
        started_at=bindparam("b_now"), lease_until=bindparam("b_until"), lease_token=units.c.lease_token + 1,
    ).returning(*units.c)


def _claim(conn: "Connection", claims: list[tuple[int, Claim]], results: list[Any], now: datetime) -> None:
    groups: dict[tuple[str | None, str | None, float], list[tuple[int, Claim]]] = {}
    for i, op in claims:
        groups.setdefault((op.job_id, op.worker, op.lease_seconds), []).append((i, op))
    for (job_id, worker, seconds), group in groups.items():
        params = {"b_ids": [op.unit_id for _, op in group], "b_now": now, "b_worker": worker,
                  "b_until": now + timedelta(seconds=seconds)}
        if job_id is not None:
            params["b_job"] = job_id
        rows = {row.id: row for row in conn.execute(_claim_statement(job_id is not None), params)}
        for i, op in group:
            results[i] = rows.pop(op.unit_id, None)  # a unit named twice (a message redelivered) is claimed once


# calls ------------------------------------------------------------------------------------------------------
@functools.cache
def _live_leases():  # noqa: ANN202
    units = Unit.__table__
    return select(units.c.id, units.c.lease_token).where(
        tuple_(units.c.id, units.c.lease_token).in_(bindparam("b_fences", expanding=True)),
        units.c.state == UnitState.RUNNING)


@functools.cache
def _insert_calls(returning: bool):  # noqa: ANN202
    table = Call.__table__
    return table.insert().returning(table.c.id, sort_by_parameter_order=True) if returning else table.insert()


def live_fences(conn: "Connection", fences: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """The (unit id, lease token) pairs among `fences` that are still their unit's running lease."""
    if not fences:
        return set()
    return {(r[0], r[1]) for r in conn.execute(_live_leases(), {"b_fences": list(set(fences))})}


def _add_calls(conn: "Connection", dialect: str, calls: list[tuple[int, AddCall]], results: list[Any],
               now: datetime) -> None:
    live = live_fences(conn, [op.fence for _, op in calls if op.fence is not None])
    kept: list[tuple[int, dict[str, Any]]] = []
    late: list[dict[str, Any]] = []
    for i, op in calls:
        row = {**op.values, "created_at": now}
        if op.fence is None or op.fence in live:
            kept.append((i, row))
        else:
            late.append({**row, "accepted": None, "error_kind": "LeaseLost", "error": LATE_CALL})
            results[i] = LeaseLost(f"unit {op.fence[0]}: its lease passed to another worker")
    # Rows with the same columns go in one executemany (RETURNING in parameter order); any others one by one.
    by_columns: dict[tuple[str, ...], list[tuple[int, dict[str, Any]]]] = {}
    for i, row in kept:
        by_columns.setdefault(tuple(row), []).append((i, row))
    for group in by_columns.values():
        ids = conn.execute(_insert_calls(True), [row for _, row in group]).scalars().all()
        for (i, _), call_id in zip(group, ids):
            results[i] = call_id
    for row in late:
        conn.execute(_insert_calls(False), row)


# settles ----------------------------------------------------------------------------------------------------
@functools.cache
def _settle_done():  # noqa: ANN202
    """Many units settled done at once, each under its own lease token."""
    units = Unit.__table__
    return update(units).where(
        tuple_(units.c.id, units.c.lease_token).in_(bindparam("b_fences", expanding=True)),
        units.c.state == UnitState.RUNNING,
    ).values(state=UnitState.DONE, last_error=None, raw_output=None, finished_at=bindparam("b_now"),
             lease_until=None).returning(units.c.id)


@functools.cache
def _settle_one(fenced: bool):  # noqa: ANN202
    units = Unit.__table__
    statement = update(units).where(units.c.id == bindparam("b_id"))
    if fenced:
        statement = statement.where(units.c.lease_token == bindparam("b_token"), units.c.state == UnitState.RUNNING)
    return statement.values(state=bindparam("b_state"), last_error=bindparam("b_error"),
                            raw_output=bindparam("b_raw"), finished_at=bindparam("b_now"),
                            lease_until=None).returning(units.c.id)


@functools.cache
def _insert_records(dialect: str):  # noqa: ANN202
    table = Record.__table__
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    return insert.on_conflict_do_nothing(index_elements=["job_id", "key"]).returning(table.c.unit_id)


@functools.cache
def _set_duplicates():  # noqa: ANN202
    units = Unit.__table__
    return update(units).where(units.c.id == bindparam("b_id")).values(duplicates=bindparam("b_dups"))


def _settle(conn: "Connection", dialect: str, settles: list[tuple[int, Settle]], results: list[Any],
            now: datetime) -> None:
    # The units' rows first: locked (PostgreSQL) or the database is (SQLite) until commit, so a second writer of
    # the same unit waits and then finds it settled.
    settled: set[int] = set()
    plain = [op for _, op in settles if op.token is not None and op.state == UnitState.DONE
             and op.error is None and op.raw is None]
    if plain:
        settled |= {r[0] for r in conn.execute(_settle_done(), {
            "b_fences": [(op.unit_id, op.token) for op in plain], "b_now": now})}
    for _, op in settles:
        if op.token is not None and op.state == UnitState.DONE and op.error is None and op.raw is None:
            continue
        params = {"b_id": op.unit_id, "b_state": op.state, "b_error": op.error, "b_raw": op.raw, "b_now": now}
        if op.token is not None:
            params["b_token"] = op.token
        if conn.execute(_settle_one(op.token is not None), params).first() is not None:
            settled.add(op.unit_id)
    rows: list[dict[str, Any]] = []
    offered: dict[int, int] = {}
    for i, op in settles:
        if op.unit_id not in settled:
            results[i] = LeaseLost(f"unit {op.unit_id}: its lease passed to another worker; its records were not "
                                   "stored")
            continue
        first: dict[str, NewRecord] = {}
        for r in op.records:  # the first record of each key wins, in order
            first.setdefault(r.key, r)
        offered[op.unit_id] = len(op.records)
        rows += [{"job_id": op.job_id, "unit_id": op.unit_id, "key": r.key, "kind": r.kind,
                  "conversation": r.conversation, "meta": r.meta, "call_ids": op.call_ids, "screen": r.screen,
                  "created_at": now}
                 for r in first.values()]
    inserted: Counter[int] = Counter()
    if rows:  # RETURNING names only the new keys (ON CONFLICT DO NOTHING)
        inserted.update(r[0] for r in conn.execute(_insert_records(dialect), rows))
    for i, op in settles:
        if op.unit_id in offered:
            duplicates = offered[op.unit_id] - inserted[op.unit_id]
            if duplicates:
                conn.execute(_set_duplicates(), {"b_id": op.unit_id, "b_dups": duplicates})
            results[i] = (inserted[op.unit_id], duplicates)


# finishes ---------------------------------------------------------------------------------------------------
@functools.cache
def _finish_statement(fenced: bool, pending: bool):  # noqa: ANN202
    units = Unit.__table__
    statement = update(units).where(units.c.id == bindparam("b_id"))
    if fenced:
        statement = statement.where(units.c.lease_token == bindparam("b_token"), units.c.state == UnitState.RUNNING)
    values: dict[str, Any] = {"state": bindparam("b_state"), "last_error": bindparam("b_error"),
                              "raw_output": bindparam("b_raw"), "duplicates": bindparam("b_dups"),
                              "lease_until": None}
    if pending:
        values["worker"] = None
    else:
        values["finished_at"] = bindparam("b_now")
    return statement.values(**values)


def _finish(conn: "Connection", op: Finish, now: datetime) -> bool:
    pending = op.state == UnitState.PENDING
    params: dict[str, Any] = {"b_id": op.unit_id, "b_state": op.state, "b_error": op.error, "b_raw": op.raw,
                              "b_dups": op.duplicates}
    if not pending:
        params["b_now"] = now
    if op.token is not None:
        params["b_token"] = op.token
    return (conn.execute(_finish_statement(op.token is not None, pending), params).rowcount or 0) > 0
