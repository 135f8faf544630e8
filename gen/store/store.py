"""Reads and writes, as plain methods over one engine. Each method is its own short transaction."""
from __future__ import annotations

import uuid
from datetime import timedelta
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, select

from gen.errors import UnknownJobError
from gen.store.db import make_engine, prepare_schema
from gen.store.threads import make_db_executor
from gen.store.models import Call, Job, Record, Unit, UnitState, utcnow
from gen.types import NewRecord


@dataclass
class JobStats:
    units: dict[str, int]
    calls: int
    failed_calls: int
    rate_limited: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    records: int
    duplicates: int

    @property
    def total_units(self) -> int:
        return sum(self.units.values())

    @property
    def finished_units(self) -> int:
        return sum(self.units.get(s, 0) for s in UnitState.FINISHED)


class Store:
    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        prepare_schema(self.engine)
        self.dialect = self.engine.dialect.name
        self._executor = None
        # Single-statement writes on the hot path skip BEGIN/COMMIT round trips.
        self.autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    @property
    def executor(self):
        """The thread pool async code runs this store's calls on (see gen.store.threads)."""
        if self._executor is None:
            self._executor = make_db_executor(self.dialect)
        return self._executor

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.engine.dispose()

    # jobs -------------------------------------------------------------------------------------------------
    def create_job(self, *, name: str, instructor: str, spec: dict[str, Any], spec_hash: str,
                   units: Iterable[tuple[str, dict[str, Any]]], queue: str = "gen") -> Job:
        """The job and all its units in one transaction: either both are written or neither."""
        job = Job(id=uuid.uuid4().hex[:12], name=name, instructor=instructor, spec=spec, spec_hash=spec_hash,
                  queue=queue)
        with self.session() as s:
            s.add(job)
            s.flush()
            rows = [{"job_id": job.id, "seq": i, "key": key, "payload": payload, "state": UnitState.PENDING}
                    for i, (key, payload) in enumerate(units)]
            if rows:
                s.connection().execute(Unit.__table__.insert(), rows)
            job.unit_count = len(rows)
            s.add(job)
            s.commit()
        return job

    def find_job(self, ref: str) -> Job:
        """By id, or by name (the newest job of that name)."""
        with self.session() as s:
            job = s.get(Job, ref)
            if job is None:
                job = s.exec(select(Job).where(Job.name == ref).order_by(Job.created_at.desc())).first()
        if job is None:
            raise UnknownJobError(ref)
        return job

    def find_resumable(self, name: str, spec_hash: str) -> Job | None:
        with self.session() as s:
            return s.exec(select(Job).where(Job.name == name, Job.spec_hash == spec_hash)
                          .order_by(Job.created_at.desc())).first()

    def list_jobs(self) -> list[Job]:
        with self.session() as s:
            return list(s.exec(select(Job).order_by(Job.created_at.desc())))

    def get_job(self, job_id: str) -> Job | None:
        with self.session() as s:
            return s.get(Job, job_id)

    def update_job_spec(self, job_id: str, spec: dict[str, Any]) -> None:
        with self.session() as s:
            s.exec(update(Job).where(Job.id == job_id).values(spec=spec, updated_at=utcnow()))
            s.commit()

    def job_cost(self, job_id: str) -> float:
        with self.session() as s:
            return float(s.exec(select(func.coalesce(func.sum(Call.cost_usd), 0.0))
                                .where(Call.job_id == job_id)).one())

    def recent_activity(self, job_id: str, seconds: float = 60.0) -> tuple[int, int]:
        """(calls, finished units) in the last `seconds`: the rate `gen status` shows and its ETA."""
        since = utcnow() - timedelta(seconds=seconds)
        with self.session() as s:
            calls = s.exec(select(func.count()).select_from(Call)
                           .where(Call.job_id == job_id, Call.created_at >= since)).one()
            units = s.exec(select(func.count()).select_from(Unit).where(
                Unit.job_id == job_id, Unit.finished_at >= since, Unit.state.in_(UnitState.FINISHED))).one()
        return int(calls), int(units)

    def set_job_status(self, job_id: str, status: str, reason: str | None = None) -> None:
        with self.session() as s:
            s.exec(update(Job).where(Job.id == job_id).values(status=status, status_reason=reason,
                                                              updated_at=utcnow()))
            s.commit()

    # units ------------------------------------------------------------------------------------------------
    def release_running(self, job_id: str) -> int:
        """Units left `running` by a driver that stopped go back to pending."""
        with self.session() as s:
            result = s.exec(update(Unit).where(Unit.job_id == job_id, Unit.state == UnitState.RUNNING)
                            .values(state=UnitState.PENDING, worker=None))
            s.commit()
            return result.rowcount or 0

    def runnable_unit_ids(self, job_id: str, *, max_attempts: int) -> list[int]:
        """Pending units, and failed ones that have attempts left, in plan order."""
        with self.session() as s:
            rows = s.exec(select(Unit.id).where(
                Unit.job_id == job_id,
                (Unit.state == UnitState.PENDING)
                | ((Unit.state == UnitState.FAILED) & (Unit.attempts < max_attempts)),
            ).order_by(Unit.seq))
            return list(rows)

    def claim_unit(self, unit_id: int, *, worker: str | None = None, lease_seconds: float = 300.0) -> Unit | None:
        """Atomically move a unit to running, or None if it is finished or another live worker holds it.

        A unit is claimable when pending or failed, or when running under a lease that has passed (its worker
        died): whatever is redelivered, one worker at a time holds a unit. One statement, one round trip.
        """
        now = utcnow()
        statement = update(Unit.__table__).where(
            Unit.__table__.c.id == unit_id,
            Unit.__table__.c.state.in_((UnitState.PENDING, UnitState.FAILED))
            | ((Unit.__table__.c.state == UnitState.RUNNING) & (Unit.__table__.c.lease_until < now)),
        ).values(state=UnitState.RUNNING, attempts=Unit.__table__.c.attempts + 1, worker=worker, started_at=now,
                 lease_until=now + timedelta(seconds=lease_seconds)).returning(*Unit.__table__.c)
        with self.autocommit.connect() as conn:
            row = conn.execute(statement).first()
        return Unit.model_validate(dict(row._mapping)) if row is not None else None

    def renew_leases(self, unit_ids: list[int], *, worker: str, lease_seconds: float) -> int:
        """A live worker extends the leases of the units it is running."""
        if not unit_ids:
            return 0
        with self.session() as s:
            result = s.exec(update(Unit).where(Unit.id.in_(unit_ids), Unit.worker == worker,
                                               Unit.state == UnitState.RUNNING)
                            .values(lease_until=utcnow() + timedelta(seconds=lease_seconds)))
            s.commit()
            return result.rowcount or 0

    def reclaim_expired(self, job_ids: list[str] | None = None) -> list[tuple[str, int]]:
        """Running units whose lease has passed go back to pending; returns their (job_id, unit_id)."""
        now = utcnow()
        with self.session() as s:
            q = update(Unit).where(Unit.state == UnitState.RUNNING, Unit.lease_until < now)
            if job_ids is not None:
                q = q.where(Unit.job_id.in_(job_ids))
            rows = s.exec(q.values(state=UnitState.PENDING, worker=None, last_error="worker lost; re-dispatched")
                          .returning(Unit.job_id, Unit.id)).all()
            s.commit()
        return [(r[0], r[1]) for r in rows]

    def undispatched_unit_ids(self, job_id: str, *, max_attempts: int) -> list[int]:
        """What `gen resume` sends again: not finished and not held under a live lease."""
        now = utcnow()
        with self.session() as s:
            rows = s.exec(select(Unit.id).where(
                Unit.job_id == job_id,
                (Unit.state == UnitState.PENDING)
                | ((Unit.state == UnitState.FAILED) & (Unit.attempts < max_attempts))
                | ((Unit.state == UnitState.RUNNING) & (Unit.lease_until < now)),
            ).order_by(Unit.seq))
            return list(rows)

    def finish_unit(self, unit_id: int, state: str, *, error: str | None = None, raw: str | None = None,
                    duplicates: int = 0) -> None:
        with self.session() as s:
            s.exec(update(Unit).where(Unit.id == unit_id).values(
                state=state, last_error=error, raw_output=raw, duplicates=duplicates, finished_at=utcnow(),
                lease_until=None))
            s.commit()

    def finish_unit_with_records(self, job_id: str, unit_id: int, records: list[NewRecord],
                                 call_ids: list[int], *, state: str = UnitState.DONE, error: str | None = None,
                                 raw: str | None = None) -> tuple[int, int]:
        """Store the records (once per key) and settle the unit (done, or rejected with kept records), in one
        transaction.

        Returns (inserted, duplicates): a record whose key the job already has is a duplicate and is dropped.
        """
        table = Record.__table__
        if records and self.dialect == "postgresql":
            return self._finish_in_one_statement(job_id, unit_id, records, call_ids, state, error, raw)
        with self.engine.begin() as conn:
            inserted = 0
            if records:
                now = utcnow()
                first: dict[str, NewRecord] = {}
                for r in records:  # the first record of each key wins, in order
                    first.setdefault(r.key, r)
                rows = [{"job_id": job_id, "unit_id": unit_id, "key": r.key, "kind": r.kind,
                         "conversation": r.conversation, "meta": r.meta, "call_ids": call_ids, "created_at": now}
                        for r in first.values()]
                insert = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)
                statement = insert.values(rows).on_conflict_do_nothing(index_elements=["job_id", "key"]) \
                    .returning(table.c.id)
                inserted = len(conn.execute(statement).all())  # RETURNING names only the new keys
            duplicates = len(records) - inserted
            conn.execute(update(Unit.__table__).where(Unit.__table__.c.id == unit_id).values(
                state=state, last_error=error, raw_output=raw, duplicates=duplicates, finished_at=utcnow(),
                lease_until=None))
        return inserted, duplicates

    def _finish_in_one_statement(self, job_id: str, unit_id: int, records: list[NewRecord], call_ids: list[int],
                                 state: str, error: str | None, raw: str | None) -> tuple[int, int]:
        """PostgreSQL: the records' INSERT as a data-modifying CTE of the unit's UPDATE: one atomic statement,
        one round trip, no BEGIN/COMMIT."""
        table, units = Record.__table__, Unit.__table__
        now = utcnow()
        first: dict[str, NewRecord] = {}
        for r in records:
            first.setdefault(r.key, r)
        rows = [{"job_id": job_id, "unit_id": unit_id, "key": r.key, "kind": r.kind, "conversation": r.conversation,
                 "meta": r.meta, "call_ids": call_ids, "created_at": now} for r in first.values()]
        inserted = postgresql.insert(table).values(rows).on_conflict_do_nothing(
            index_elements=["job_id", "key"]).returning(table.c.id).cte("inserted")
        new_rows = select(func.count()).select_from(inserted).scalar_subquery()
        statement = update(units).where(units.c.id == unit_id).values(
            state=state, last_error=error, raw_output=raw, duplicates=len(records) - new_rows, finished_at=now,
            lease_until=None).returning(units.c.duplicates).add_cte(inserted)
        with self.autocommit.connect() as conn:
            duplicates = conn.execute(statement).scalar_one()
        return len(records) - duplicates, duplicates

    def get_unit(self, unit_id: int) -> Unit | None:
        with self.session() as s:
            return s.get(Unit, unit_id)

    def record_keys(self, job_id: str) -> set[str]:
        with self.session() as s:
            return set(s.exec(select(Record.key).where(Record.job_id == job_id)))

    # calls ------------------------------------------------------------------------------------------------
    def add_call(self, **values: Any) -> int:
        """One teacher call, with its verdict when it has one: a single INSERT."""
        with self.autocommit.connect() as conn:
            return conn.execute(Call.__table__.insert().returning(Call.__table__.c.id),
                                {**values, "created_at": utcnow()}).scalar_one()

    def accepted_calls(self, unit_id: int) -> list[tuple[int, str, int, str]]:
        """(id, request_key, occurrence, text) of the unit's accepted calls: what a rerun replays."""
        with self.session() as s:
            return list(s.exec(select(Call.id, Call.request_key, Call.occurrence, Call.text)
                               .where(Call.unit_id == unit_id, Call.accepted == True)))  # noqa: E712

    def calls_for_job(self, job_id: str) -> list[Call]:
        with self.session() as s:
            return list(s.exec(select(Call).where(Call.job_id == job_id).order_by(Call.id)))

    # reading ----------------------------------------------------------------------------------------------
    def record_counts(self, job_id: str) -> dict[str, int]:
        """Records by kind (conversation, rejected, pair, ...)."""
        with self.session() as s:
            return {kind: n for kind, n in s.exec(select(Record.kind, func.count()).where(Record.job_id == job_id)
                                                  .group_by(Record.kind))}

    def stats(self, job_id: str) -> JobStats:
        with self.session() as s:
            units = {st: n for st, n in s.exec(select(Unit.state, func.count()).where(Unit.job_id == job_id)
                                                .group_by(Unit.state))}
            calls = s.exec(select(
                func.count(),
                func.coalesce(func.sum(case((Call.error.is_not(None), 1), else_=0)), 0),
                func.coalesce(func.sum(case((Call.status == 429, 1), else_=0)), 0),
                func.coalesce(func.sum(Call.prompt_tokens), 0),
                func.coalesce(func.sum(Call.completion_tokens), 0),
                func.coalesce(func.sum(Call.cost_usd), 0.0),
            ).where(Call.job_id == job_id)).one()
            records = s.exec(select(func.count()).select_from(Record).where(Record.job_id == job_id,
                                                                            Record.kind != "rejected")).one()
            dups = s.exec(select(func.coalesce(func.sum(Unit.duplicates), 0)).where(Unit.job_id == job_id)).one()
        return JobStats(units={st: units.get(st, 0) for st in UnitState.ALL}, calls=calls[0],
                        failed_calls=int(calls[1]), rate_limited=int(calls[2]), prompt_tokens=int(calls[3]),
                        completion_tokens=int(calls[4]), cost_usd=float(calls[5]), records=records,
                        duplicates=int(dups))

    def units(self, job_id: str, state: str | None = None) -> list[Unit]:
        with self.session() as s:
            q = select(Unit).where(Unit.job_id == job_id)
            if state:
                q = q.where(Unit.state == state)
            return list(s.exec(q.order_by(Unit.seq)))

    def iter_records(self, job_id: str, *, kind: str | None = None, batch: int = 500) -> Iterator[Record]:
        """Stream a job's records in id order, `batch` rows at a time (constant memory)."""
        last = 0
        while True:
            with self.session() as s:
                q = select(Record).where(Record.job_id == job_id, Record.id > last)
                if kind:
                    q = q.where(Record.kind == kind)
                rows = list(s.exec(q.order_by(Record.id).limit(batch)))
            if not rows:
                return
            yield from rows
            last = rows[-1].id

    def near_duplicates(self, job_id: str) -> int:
        """Generated texts dropped as near-duplicates in a job (gen.neardup)."""
        from gen.store.models import NearDuplicate

        with self.session() as s:
            return int(s.exec(select(func.count()).select_from(NearDuplicate)
                              .where(NearDuplicate.job_id == job_id)).one())
