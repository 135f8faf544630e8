"""Who holds what: the `gen run` process holding a job, the leases workers hold on units, and which units have a
queue message. The part of the store the execution core's coordination reads and writes (a mixin of Store)."""
from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, tuple_, update
from sqlmodel import select

from gen.store.models import Job, Unit, UnitState, utcnow
from gen.store.states import JobState

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlmodel import Session


class Coordination:
    autocommit: "Engine"

    def session(self) -> "Session":  # provided by Store
        raise NotImplementedError

    def take_driver(self, job_id: str, driver: str, seconds: float) -> str | None:
        """Hold the job for one `gen run` process; None when taken, else who holds it now (pid@host)."""
        now = utcnow()
        with self.session() as s:
            result = s.exec(update(Job).where(Job.id == job_id, (Job.driver == None) | (Job.driver == driver)  # noqa: E711
                                              | (Job.driver_until < now))
                            .values(driver=driver, driver_until=now + timedelta(seconds=seconds)))
            s.commit()
            if result.rowcount:
                return None
            return s.exec(select(Job.driver).where(Job.id == job_id)).first() or "another process"

    def release_driver(self, job_id: str, driver: str) -> None:
        with self.session() as s:
            s.exec(update(Job).where(Job.id == job_id, Job.driver == driver).values(driver=None, driver_until=None))
            s.commit()

    def waiting_without_message(self, job_id: str, *, older_than: float) -> int:
        """Pending units of a fleet job whose last queue message is older than `older_than` seconds."""
        since = utcnow() - timedelta(seconds=older_than)
        with self.session() as s:
            return int(s.exec(select(func.count()).select_from(Unit).where(
                Unit.job_id == job_id, Unit.state == UnitState.PENDING, Unit.dispatched_at != None,  # noqa: E711
                Unit.dispatched_at < since)).one())

    def mark_dispatched(self, unit_ids: list[int]) -> None:
        """The queue has a message for these units as of now (what the supervisor's stall check reads)."""
        if not unit_ids:
            return
        now = utcnow()
        with self.autocommit.connect() as conn:
            for start in range(0, len(unit_ids), 5000):
                conn.execute(update(Unit.__table__).where(Unit.__table__.c.id.in_(unit_ids[start:start + 5000]))
                             .values(dispatched_at=now))

    def stalled_units(self, *, older_than: float, limit: int = 20000) -> list[tuple[str, str, int]]:
        """(job id, queue, unit id) of pending units of active fleet jobs whose last message was sent more than
        `older_than` seconds ago (or never): what the supervisor sends again when their queue is empty."""
        since = utcnow() - timedelta(seconds=older_than)
        with self.session() as s:
            rows = s.exec(select(Unit.job_id, Job.queue, Unit.id).join(Job, Job.id == Unit.job_id).where(
                Job.status == JobState.ACTIVE, Job.driver == None,  # noqa: E711
                Unit.state == UnitState.PENDING,
                (Unit.dispatched_at == None) | (Unit.dispatched_at < since),  # noqa: E711
            ).order_by(Unit.job_id, Unit.seq).limit(limit)).all()
        return [(r[0], r[1], r[2]) for r in rows]

    def unit_job(self, unit_id: int) -> str | None:
        with self.session() as s:
            return s.exec(select(Unit.job_id).where(Unit.id == unit_id)).first()

    def renew_leases(self, leases: list[tuple[int, int]], *, worker: str, lease_seconds: float) -> set[int]:
        """A live worker extends the leases it still holds, given as (unit id, lease token); returns the ids
        renewed (a unit missing from the answer was taken from this worker: its lease passed)."""
        if not leases:
            return set()
        units = Unit.__table__
        with self.autocommit.connect() as conn:
            rows = conn.execute(update(units).where(
                tuple_(units.c.id, units.c.lease_token).in_(leases), units.c.worker == worker,
                units.c.state == UnitState.RUNNING,
            ).values(lease_until=utcnow() + timedelta(seconds=lease_seconds)).returning(units.c.id)).all()
        return {r[0] for r in rows}

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
