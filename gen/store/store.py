"""Reads and writes, as plain methods over one engine. Each method is its own short transaction."""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, select

from gen.errors import UnknownJobError
from gen.store.db import make_engine, prepare_schema
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

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    # jobs -------------------------------------------------------------------------------------------------
    def create_job(self, *, name: str, instructor: str, spec: dict[str, Any], spec_hash: str,
                   units: Iterable[tuple[str, dict[str, Any]]]) -> Job:
        """The job and all its units in one transaction: either both are written or neither."""
        job = Job(id=uuid.uuid4().hex[:12], name=name, instructor=instructor, spec=spec, spec_hash=spec_hash)
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

    def claim_unit(self, unit_id: int, *, worker: str | None = None,
                   from_states: tuple[str, ...] = (UnitState.PENDING, UnitState.FAILED)) -> Unit | None:
        """Atomically move a unit to running; None if someone else has it or it is finished."""
        with self.session() as s:
            result = s.exec(update(Unit).where(Unit.id == unit_id, Unit.state.in_(from_states))
                            .values(state=UnitState.RUNNING, attempts=Unit.attempts + 1, worker=worker,
                                    started_at=utcnow()))
            if not result.rowcount:
                s.rollback()
                return None
            s.commit()
            return s.get(Unit, unit_id)

    def finish_unit(self, unit_id: int, state: str, *, error: str | None = None, raw: str | None = None,
                    duplicates: int = 0) -> None:
        with self.session() as s:
            s.exec(update(Unit).where(Unit.id == unit_id).values(
                state=state, last_error=error, raw_output=raw, duplicates=duplicates, finished_at=utcnow()))
            s.commit()

    def finish_unit_with_records(self, job_id: str, unit_id: int, records: list[NewRecord],
                                 call_ids: list[int]) -> tuple[int, int]:
        """Store the records (once per key) and mark the unit done, in one transaction.

        Returns (inserted, duplicates): a record whose key the job already has is a duplicate and is dropped.
        """
        with self.session() as s:
            inserted = 0
            if records:
                rows = [{"job_id": job_id, "unit_id": unit_id, "key": r.key, "kind": r.kind,
                         "conversation": r.conversation, "meta": r.meta, "call_ids": call_ids,
                         "created_at": utcnow()} for r in records]
                insert = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(Record.__table__)
                statement = insert.on_conflict_do_nothing(index_elements=["job_id", "key"]).returning(
                    Record.__table__.c.id)
                for row in rows:  # per row, so RETURNING says which keys were new
                    if s.connection().execute(statement, row).first() is not None:
                        inserted += 1
            duplicates = len(records) - inserted
            s.exec(update(Unit).where(Unit.id == unit_id).values(
                state=UnitState.DONE, last_error=None, duplicates=duplicates, finished_at=utcnow()))
            s.commit()
        return inserted, duplicates

    def get_unit(self, unit_id: int) -> Unit | None:
        with self.session() as s:
            return s.get(Unit, unit_id)

    def record_keys(self, job_id: str) -> set[str]:
        with self.session() as s:
            return set(s.exec(select(Record.key).where(Record.job_id == job_id)))

    # calls ------------------------------------------------------------------------------------------------
    def add_call(self, **values: Any) -> int:
        with self.session() as s:
            result = s.connection().execute(Call.__table__.insert().returning(Call.__table__.c.id),
                                            {**values, "created_at": utcnow()})
            call_id = result.scalar_one()
            s.commit()
            return call_id

    def mark_call(self, call_id: int, *, accepted: bool, reason: str | None = None) -> None:
        with self.session() as s:
            s.exec(update(Call).where(Call.id == call_id).values(accepted=accepted, reject_reason=reason))
            s.commit()

    def accepted_calls(self, unit_id: int) -> list[tuple[int, str, int, str]]:
        """(id, request_key, occurrence, text) of the unit's accepted calls: what a rerun replays."""
        with self.session() as s:
            return list(s.exec(select(Call.id, Call.request_key, Call.occurrence, Call.text)
                               .where(Call.unit_id == unit_id, Call.accepted == True)))  # noqa: E712

    def calls_for_job(self, job_id: str) -> list[Call]:
        with self.session() as s:
            return list(s.exec(select(Call).where(Call.job_id == job_id).order_by(Call.id)))

    # reading ----------------------------------------------------------------------------------------------
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
            records = s.exec(select(func.count()).select_from(Record).where(Record.job_id == job_id)).one()
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
