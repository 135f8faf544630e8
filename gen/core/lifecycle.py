"""A job's whole life, written once for both drivers (`gen run` and the Celery worker).

- `open_job`: the job a spec already is (resume), or a new one; refused before anything is written when the
  instructor plans no units.
- `plan_units`: the instructor's units, inserted in chunks from where planning stopped, so a job of millions of
  units starts at once with flat memory, and an interrupted plan resumes exactly.
- `JobRun`: one job as one process runs it: teachers built once, the near-duplicate index, the executor, the
  budget stop and the job's state moves (active, finished, stopped, blocked: gen.store.states).
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gen.config import JobSpec
from gen.errors import BudgetExhausted, PlannedElsewhere, TeacherUnavailable, UsageError
from gen.faults import failpoint
from gen.instructors import Instructor
from gen.instructors.base import MAX_UNITS
from gen.store import Job, Store
from gen.store.states import JobState
from gen.store.threads import in_db_thread

if TYPE_CHECKING:  # the running side, imported by JobRun when a job is run: `gen enqueue` only opens and plans
    from gen.budget import Budget
    from gen.core.execute import UnitResult
    from gen.core.journal import CallGate
    from gen.core.lease import LeaseKeeper
    from gen.core.teachers import LimiterFactory
    from gen.teacher import Meter

log = logging.getLogger("gen.core")
PLAN_CHUNK = 2000


@dataclass
class OpenedJob:
    job: Job
    created: bool


def open_job(store: Store, spec: JobSpec, instructor: Instructor, *, resume: bool = True,
             queue: str = "gen") -> OpenedJob:
    """The job this spec already is (same name, same spec: resume; its `run:` settings are updated), or a new
    one whose units are planned afterwards by `plan_units`."""
    if resume:
        existing = store.find_resumable(spec.name, spec.spec_hash)
        if existing is not None:
            if existing.spec != spec.to_json():
                store.update_job_spec(existing.id, spec.to_json())  # e.g. a raised run.budget_usd
                existing = store.get_job(existing.id) or existing
            return OpenedJob(existing, created=False)
    if next(iter(instructor.plan()), None) is None:
        raise UsageError(f"{spec.source}: the instructor plans no units (is its input empty?)")
    job = store.create_job(name=spec.name, instructor=spec.instructor_type, spec=spec.to_json(),
                           spec_hash=spec.spec_hash, queue=queue, planning_done=False)
    return OpenedJob(job, created=True)


def plan_units(store: Store, job_id: str, instructor: Instructor, *, start: int, chunk: int = PLAN_CHUNK,
               on_chunk: Callable[[list[int]], None] | None = None, stop: threading.Event | None = None) -> int:
    """Insert the job's units from plan position `start` in chunks (each chunk and the new position in one
    transaction); `on_chunk(new ids)` after each. Returns the position reached; marks planning done at the end."""
    units = itertools.islice(instructor.plan(), start, None)
    position = start
    while stop is None or not stop.is_set():
        batch = [(u.key, u.payload) for u in itertools.islice(units, chunk)]
        if not batch:
            store.finish_planning(job_id)
            break
        if position + len(batch) > MAX_UNITS:
            raise UsageError(f"the job plans more than {MAX_UNITS:,} units: split it into several jobs")
        try:
            ids = store.add_units(job_id, position, batch)
        except PlannedElsewhere:
            break  # another planner of the job goes on from here
        position += len(batch)
        failpoint("after-plan-chunk")
        if on_chunk is not None:
            on_chunk(ids)
    return position


class JobRun:
    """One job as one process runs it, the same in `gen run` and in a worker."""

    def __init__(self, store: Store, job_id: str, spec: JobSpec, instructor: Instructor, *, leases: LeaseKeeper,
                 limiter_factory: LimiterFactory | None = None, meter: Meter | None = None,
                 gate: CallGate | None = None, budget: Budget | None = None):
        """`limiter_factory`: each teacher's rate limiter (default: in this process, gen.core.teachers)."""
        from gen.core.execute import UnitExecutor
        from gen.core.teachers import build_teachers, local_limiter
        from gen.neardup import NearDupIndex
        from gen.teacher import Meter

        self.store = store
        self.job_id = job_id
        self.spec = spec
        self.meter = meter or Meter()
        instructor.services.seen = NearDupIndex(store, job_id)  # shared by every worker of the job
        self.teachers = build_teachers(spec, meter=self.meter, limiter_factory=limiter_factory or local_limiter,
                                       budget=budget)
        self.executor = UnitExecutor(store, job_id, spec, instructor, self.teachers, leases=leases, gate=gate)
        self._spent_in_db = 0.0
        self._meter_at_read = 0.0
        self._read_at = float("-inf")

    async def run_unit(self, unit_id: int) -> UnitResult:
        """Run one unit, unless the budget is reached (BudgetExhausted: the job is stopped) or a teacher cannot
        be used (TeacherUnavailable: the job is blocked, the unit stays pending)."""
        reason = await self.budget_stop()
        if reason is not None:
            await in_db_thread(self.store.set_job_status, self.job_id, JobState.STOPPED, reason)
            raise BudgetExhausted(reason)
        try:
            return await self.executor.execute(unit_id)
        except BudgetExhausted as exc:
            await in_db_thread(self.store.set_job_status, self.job_id, JobState.STOPPED, str(exc))
            raise
        except TeacherUnavailable as exc:
            await in_db_thread(self.store.set_job_status, self.job_id, JobState.BLOCKED, str(exc))
            raise

    async def spent(self) -> float:
        """The job's spend: the database's total (every worker's calls), read at most once a second, plus what
        this process has spent since."""
        if time.monotonic() - self._read_at > 1.0:
            self._spent_in_db = await in_db_thread(self.store.job_cost, self.job_id)
            self._meter_at_read, self._read_at = self.meter.cost_usd, time.monotonic()
        return self._spent_in_db + self.meter.cost_usd - self._meter_at_read

    async def budget_stop(self) -> str | None:
        budget = self.spec.run.budget_usd
        if budget is None:
            return None
        spent = await self.spent()
        return f"budget reached: ${spent:.4f} of ${budget:.4f}" if spent >= budget else None

    async def close(self) -> None:
        from gen.core.teachers import close_teachers

        await close_teachers(self.teachers)


def settle_job(store: Store, job_id: str, *, max_attempts: int) -> JobState | None:
    """A job with its plan complete and nothing left to run is finished (whichever driver ran it)."""
    job = store.get_job(job_id)
    if job is None or not job.planning_done or job.status != JobState.ACTIVE:
        return None
    if store.has_unfinished_units(job_id, max_attempts=max_attempts):  # one indexed probe, not the job's totals
        return None
    keep_target(store, job)
    store.set_job_status(job_id, JobState.FINISHED)
    return JobState.FINISHED


def keep_target(store: Store, job: Job) -> None:
    """In target mode, records past the target-th accepted one are surplus, whenever they arrived (units retried
    after planning ended add records too)."""
    target = (job.spec or {}).get("target")
    if target:
        from gen.core.target import keep_exactly

        keep_exactly(store, job.id, int(target))


def planner_for(spec: JobSpec) -> Callable[..., int]:
    """`plan_units`, or in target mode (`instructor.target`) the wave planner of gen.core.target."""
    if spec.target is None:
        return plan_units
    import functools

    from gen.core.target import plan_waves

    return functools.partial(plan_waves, target=spec.target, max_attempts=spec.run.unit_attempts)
