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

from gen.errors import PlannedElsewhere, UnknownJobError
from gen.store import record_rows, writes
from gen.store.coordination import Coordination
from gen.store.db import make_engine, prepare_schema
from gen.store.threads import make_db_executor
from gen.store.models import Call, Job, Record, Unit, UnitState, utcnow
from gen.store.record_rows import RecordRow
from gen.store.states import JobState, allowed_job_sources
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


class Store(Coordination):
    """A job's records and state. Who holds what (drivers, leases, dispatch) is in gen.store.coordination."""

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
                   units: Iterable[tuple[str, dict[str, Any]]] = (), queue: str = "gen",
                   planning_done: bool = True) -> Job:
        """A job, with `units` given here in the same transaction. A job planned in chunks (gen.core.lifecycle)
        is created with `planning_done=False` and gets its units through `add_units`."""
        job = Job(id=uuid.uuid4().hex[:12], name=name, instructor=instructor, spec=spec, spec_hash=spec_hash,
                  queue=queue, planning_done=planning_done)
        with self.session() as s:
            s.add(job)
            s.flush()
            rows = [{"job_id": job.id, "seq": i, "key": key, "payload": payload, "state": UnitState.PENDING}
                    for i, (key, payload) in enumerate(units)]
            if rows:
                s.connection().execute(Unit.__table__.insert(), rows)
            job.unit_count = job.planned_units = len(rows)
            s.add(job)
            s.commit()
        return job

    def add_units(self, job_id: str, first_seq: int, units: list[tuple[str, dict[str, Any]]]) -> list[int]:
        """One chunk of a job's plan, from plan position `first_seq`, with the job's planning position, in one
        transaction (so planning resumes exactly where it stopped). A key the job already has is skipped.
        Returns the new units' ids, in plan order.

        The planning position moves by compare-and-set: if another planner already planned from `first_seq`
        (two supervisors overlapping, a wave planned while `gen enqueue` still plans the first), this chunk is
        not stored and PlannedElsewhere is raised."""
        table = Unit.__table__
        rows = [{"job_id": job_id, "seq": first_seq + i, "key": key, "payload": payload, "state": UnitState.PENDING}
                for i, (key, payload) in enumerate(units)]
        insert = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table) \
            .on_conflict_do_nothing(index_elements=["job_id", "key"])
        end = first_seq + len(units)
        jobs = Job.__table__
        with self.engine.begin() as conn:
            # The job's row first: it stays locked (PostgreSQL) or the database does (SQLite) until commit.
            moved = conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.planned_units == first_seq)
                                 .values(planned_units=end, updated_at=utcnow())).rowcount
            if not moved:
                raise PlannedElsewhere(job_id, first_seq)
            if rows:
                conn.execute(insert, rows)  # executemany: no per-chunk statement compiling
            ids = [r[0] for r in conn.execute(select(table.c.id).where(
                table.c.job_id == job_id, table.c.seq >= first_seq, table.c.seq < end,
                table.c.state == UnitState.PENDING).order_by(table.c.seq))]
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(unit_count=jobs.c.unit_count + len(ids)))
        return ids

    def finish_planning(self, job_id: str) -> None:
        with self.session() as s:
            s.exec(update(Job).where(Job.id == job_id).values(planning_done=True, updated_at=utcnow()))
            s.commit()

    def delete_job(self, job_id: str) -> None:
        """A job that was refused before any call (e.g. it planned no units), with whatever it holds."""
        with self.engine.begin() as conn:
            for table in (Call.__table__, Record.__table__, Unit.__table__):
                conn.execute(table.delete().where(table.c.job_id == job_id))
            conn.execute(Job.__table__.delete().where(Job.__table__.c.id == job_id))

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

    def set_job_status(self, job_id: str, status: str, reason: str | None = None) -> bool:
        """Move a job to `status` if the state machine allows it from where it is (gen.store.states.JOB_MOVES);
        False when it does not (e.g. a cancelled job is not made `stopped` by a late budget check)."""
        target = JobState(status)
        with self.session() as s:
            result = s.exec(update(Job).where(Job.id == job_id, Job.status.in_(allowed_job_sources(target)))
                            .values(status=target.value, status_reason=reason, updated_at=utcnow()))
            s.commit()
            return (result.rowcount or 0) > 0

    # units ------------------------------------------------------------------------------------------------
    def release_running(self, job_id: str, *, worker_prefix: str) -> int:
        """Units left `running` by earlier runs of this driver kind (`gen run`, which holds the job alone) go
        back to pending; units held by fleet workers keep their leases."""
        with self.session() as s:
            result = s.exec(update(Unit).where(Unit.job_id == job_id, Unit.state == UnitState.RUNNING,
                                               Unit.worker.startswith(worker_prefix))
                            .values(state=UnitState.PENDING, worker=None, lease_until=None))
            s.commit()
            return result.rowcount or 0

    def reopen_failed(self, job_id: str) -> int:
        """Failed units back to pending, for a resume the user asked for (`gen run` again, `gen resume`): each
        gets one more attempt beyond `run.unit_attempts`. Their attempts count is kept, so an attempt after the
        first still replays the calls answered before it."""
        with self.session() as s:
            result = s.exec(update(Unit).where(Unit.job_id == job_id, Unit.state == UnitState.FAILED)
                            .values(state=UnitState.PENDING, worker=None, lease_until=None))
            s.commit()
            return result.rowcount or 0

    def runnable_unit_ids(self, job_id: str, *, max_attempts: int, after_seq: int = -1,
                          limit: int | None = None) -> list[int]:
        """Pending units, and failed ones that have attempts left, in plan order (a page of them with `limit`,
        after plan position `after_seq`)."""
        return [uid for uid, _ in self.runnable_units(job_id, max_attempts=max_attempts, after_seq=after_seq,
                                                      limit=limit)]

    def has_unfinished_units(self, job_id: str, *, max_attempts: int) -> bool:
        """Whether any unit of the job is running, pending, or failed with attempts left (LIMIT 1 probes)."""
        with self.session() as s:
            for condition in (Unit.state.in_((UnitState.RUNNING, UnitState.PENDING)),
                              (Unit.state == UnitState.FAILED) & (Unit.attempts < max_attempts)):
                if s.exec(select(Unit.id).where(Unit.job_id == job_id, condition).limit(1)).first() is not None:
                    return True
        return False

    def runnable_units(self, job_id: str, *, max_attempts: int, after_seq: int = -1,
                       limit: int | None = None) -> list[tuple[int, int]]:
        """(id, seq) of runnable units in plan order; see `runnable_unit_ids`."""
        with self.session() as s:
            q = select(Unit.id, Unit.seq).where(
                Unit.job_id == job_id, Unit.seq > after_seq,
                (Unit.state == UnitState.PENDING)
                | ((Unit.state == UnitState.FAILED) & (Unit.attempts < max_attempts)),
            ).order_by(Unit.seq)
            if limit is not None:
                q = q.limit(limit)
            return [(r[0], r[1]) for r in s.exec(q)]

    def apply_writes(self, ops: list[writes.Op]) -> list[Any]:
        """Claims, call rows and settles of many units in one transaction (gen.store.writes): one result per op,
        a value or the LeaseLost its fence raised. Raises (and writes nothing) if the transaction fails."""
        with self.engine.begin() as conn:
            return writes.apply(conn, self.dialect, ops)

    def _one(self, op: writes.Op) -> Any:
        result = self.apply_writes([op])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def claim_unit(self, unit_id: int, *, job_id: str | None = None, worker: str | None = None,
                   lease_seconds: float = 300.0) -> Unit | None:
        """Atomically move a unit to running under a new lease token, or None if it is finished, another live
        worker holds it, or it is not a unit of `job_id` (a message naming one job and another job's unit).

        A unit is claimable when pending or failed, or when running under a lease that has passed (its worker
        died): whatever is redelivered, one worker at a time holds a unit, and every write for it carries the
        token this claim returns (a worker that lost the lease writes nothing more). One statement.
        """
        row = self._one(writes.Claim(unit_id, job_id, worker, lease_seconds))
        return Unit.model_validate(dict(row._mapping)) if row is not None else None

    def finish_unit(self, unit_id: int, state: str, *, token: int | None = None, error: str | None = None,
                    raw: str | None = None, duplicates: int = 0) -> bool:
        """Settle a unit without records. With `token`, only while that lease is the unit's (False otherwise)."""
        return self._one(writes.Finish(unit_id, state, token, error, raw, duplicates))

    def finish_unit_with_records(self, job_id: str, unit_id: int, records: list[NewRecord],
                                 call_ids: list[int], *, token: int | None = None, state: str = UnitState.DONE,
                                 error: str | None = None, raw: str | None = None) -> tuple[int, int]:
        """Store the records (once per key) and settle the unit (done, or rejected with kept records), in one
        transaction, fenced by the lease `token`: a worker that lost the unit stores nothing (LeaseLost).

        Returns (inserted, duplicates): a record whose key the job already has is a duplicate and is dropped.
        """
        return self._one(writes.Settle(job_id, unit_id, records, call_ids, token, state, error, raw))

    def get_unit(self, unit_id: int) -> Unit | None:
        with self.session() as s:
            return s.get(Unit, unit_id)

    def record_keys(self, job_id: str) -> set[str]:
        with self.session() as s:
            return set(s.exec(select(Record.key).where(Record.job_id == job_id)))

    # calls ------------------------------------------------------------------------------------------------
    def add_call(self, *, fence: tuple[int, int] | None = None, **values: Any) -> int:
        """One teacher call, with its verdict when it has one.

        With `fence` (unit id, lease token) the row is written only while that lease is the unit's; otherwise
        the call is still kept (it was paid for: its cost counts) but never replayed, and LeaseLost is raised."""
        return self._one(writes.AddCall(values, fence))

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

    def iter_record_rows(self, job_id: str, *, kind: str | None = None, ids: Iterable[int] | None = None,
                         page: int = 5000) -> Iterator[RecordRow]:
        """What `iter_records` streams (or only the records `ids`), as light tuples read with SQLAlchemy Core in
        keyset pages of `page` rows, each page one short read (no lock held between pages), decoded one row at a
        time (memory: one page of JSON text). For reading many records fast (gen export): gen.store.record_rows."""
        if ids is not None:
            wanted = sorted(set(ids))
            for start in range(0, len(wanted), page):
                with self.engine.connect() as conn:
                    rows = conn.execute(record_rows.page_query(job_id, kind=kind, after=0, limit=page,
                                                               ids=wanted[start:start + page])).all()
                yield from record_rows.decoded(rows)
            return
        last = 0
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(record_rows.page_query(job_id, kind=kind, after=last, limit=page)).all()
            if not rows:
                return
            last = rows[-1][0]
            yield from record_rows.decoded(rows)
            del rows

    def near_duplicates(self, job_id: str) -> int:
        """Generated texts dropped as near-duplicates in a job (gen.neardup)."""
        from gen.store.models import NearDuplicate

        with self.session() as s:
            return int(s.exec(select(func.count()).select_from(NearDuplicate)
                              .where(NearDuplicate.job_id == job_id)).one())
