"""Target mode (`instructor.target: N`): plan units in waves until N records pass every filter, check, judge and
dedup, then keep exactly N. One planner for both drivers.

The first wave plans what N records need at one record per unit; each next wave plans what the records still
missing need at the yield observed so far (accepted records per settled unit), so the plan never overshoots by
more than one wave's expected excess. A wave is planned only once the units before it are settled. When N
records are accepted, planning ends and any record past the N-th is kept as kind `surplus`: stored and counted,
never exported. The plan stops early, saying so, when the instructor's plan runs out (`count` caps it) or when
`run.budget_usd` stops the job.

`plan_next_wave` is one step of that plan; `gen run` loops on it in a thread (`plan_waves`), the fleet's
elected supervisor calls it on each tick for every active target-mode job (`advance_fleet_jobs`). On the fleet a
failed unit is retried by `gen resume` only (as in any fleet job), so there a wave counts it settled.
"""
from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, update
from sqlmodel import select

from gen.errors import PlannedElsewhere, UsageError
from gen.instructors import Instructor
from gen.instructors.base import MAX_UNITS
from gen.store import Job, Record, Store, UnitState
from gen.store.states import JobState

SURPLUS = "surplus"
NOT_ACCEPTED = ("rejected", SURPLUS)
DEFAULT_CAP_FACTOR = 10  # without `count`, the plan may hold this many units (or items) per target record
WAVE_CHUNK = 2000        # units inserted (and dispatched) per transaction within a wave
FLEET_RETRIES = 0        # on the fleet, failed units wait for `gen resume`: a wave does not wait for them


def accepted_records(store: Store, job_id: str) -> int:
    with store.session() as s:
        return s.exec(select(func.count()).select_from(Record).where(
            Record.job_id == job_id, Record.kind.not_in(NOT_ACCEPTED))).one()


def observed_yield(store: Store, job_id: str) -> tuple[int, int, float | None]:
    """(accepted records, settled units, records per settled unit or None before any unit settled)."""
    units = store.stats(job_id).units
    settled = units[UnitState.DONE] + units[UnitState.REJECTED] + units[UnitState.FAILED]
    accepted = accepted_records(store, job_id)
    return accepted, settled, (accepted / settled if settled else None)


def next_wave(target: int, accepted: int, yield_per_unit: float | None, planned: int) -> int:
    """Units the records still missing need at the observed yield; while nothing passed yet, as many units as
    the plan already holds (the plan doubles)."""
    missing = target - accepted
    if missing <= 0:
        return 0
    if yield_per_unit is None:
        return missing
    if yield_per_unit <= 0:
        return max(1, planned)
    return max(1, math.ceil(missing / yield_per_unit))


def keep_exactly(store: Store, job_id: str, target: int) -> int:
    """Records past the target-th accepted one become `surplus`; how many."""
    with store.session() as s:
        ids = list(s.exec(select(Record.id).where(Record.job_id == job_id, Record.kind.not_in(NOT_ACCEPTED))
                          .order_by(Record.id)))
        extra = ids[target:]
        if extra:
            s.execute(update(Record).where(Record.id.in_(extra)).values(kind=SURPLUS))
            s.commit()
        return len(extra)


def wave_settled(store: Store, job_id: str, max_attempts: int) -> bool:
    """Nothing running and nothing runnable (a failed unit with attempts left is runnable)."""
    units = store.stats(job_id).units
    return not units[UnitState.RUNNING] and not store.runnable_unit_ids(job_id, max_attempts=max_attempts, limit=1)


@dataclass
class WaveStep:
    """What one step of the plan did."""

    position: int               # plan position reached
    planned: int = 0            # units planned by this step
    waiting: bool = False       # the wave before is still running: nothing done
    done: bool = False          # planning is over: the target was met, or the instructor's plan ran out
    reached: bool = False       # the target was met


def plan_next_wave(store: Store, job_id: str, instructor: Instructor, *, target: int, start: int,
                   max_attempts: int, on_chunk: Callable[[list[int]], None] | None = None) -> WaveStep:
    """One step of the plan from plan position `start`: wait (the wave before is running), plan the next wave
    (its units inserted in chunks, `on_chunk(new ids)` after each), or end planning (the target is met: records
    past it become surplus; or the plan ran out)."""
    if not wave_settled(store, job_id, max_attempts):
        return WaveStep(start, waiting=True)
    accepted, _, per_unit = observed_yield(store, job_id)
    size = next_wave(target, accepted, per_unit, start)
    if size == 0:
        keep_exactly(store, job_id, target)
        store.finish_planning(job_id)
        return WaveStep(start, done=True, reached=True)
    units = itertools.islice(instructor.plan(), start, start + size)
    position = start
    while True:
        batch = [(u.key, u.payload) for u in itertools.islice(units, WAVE_CHUNK)]
        if not batch:
            break
        if position + len(batch) > MAX_UNITS:
            raise UsageError(f"the job plans more than {MAX_UNITS:,} units: split it into several jobs")
        try:
            ids = store.add_units(job_id, position, batch)
        except PlannedElsewhere:  # another planner took this wave: it goes on from there
            return WaveStep(store.get_job(job_id).planned_units, waiting=True)
        position += len(batch)
        if on_chunk is not None:
            on_chunk(ids)
    if position == start:  # the instructor's plan ran out before the target
        store.finish_planning(job_id)
        return WaveStep(start, done=True)
    return WaveStep(position, planned=position - start)


def plan_waves(store: Store, job_id: str, instructor: Instructor, *, target: int, start: int, max_attempts: int,
               on_chunk: Callable[[list[int]], None] | None = None, stop: threading.Event | None = None,
               poll: float = 0.1) -> int:
    """`gen run`'s planner: step the plan (`plan_next_wave`) until planning is over or `stop` is set. Returns
    the plan position reached."""
    position = start
    while stop is None or not stop.is_set():
        step = plan_next_wave(store, job_id, instructor, target=target, start=position, max_attempts=max_attempts,
                              on_chunk=on_chunk)
        position = step.position
        if step.done:
            break
        if step.waiting:
            if stop is not None:
                stop.wait(poll)
            else:
                time.sleep(poll)
    return position


def fleet_target_jobs(store: Store) -> list[Job]:
    """Active fleet jobs in target mode whose plan is not over (what the fleet's supervisor advances)."""
    with store.session() as s:
        jobs = s.exec(select(Job).where(Job.status == JobState.ACTIVE, Job.planning_done == False,  # noqa: E712
                                        Job.driver == None)).all()  # noqa: E711 (a `gen run` plans its own)
    return [job for job in jobs if job.spec.get("target")]


def advance_fleet_job(store: Store, job: Job, instructor: Instructor,
                      dispatch: Callable[[list[int]], object]) -> WaveStep:
    """One supervisor tick for a fleet job in target mode: the next wave planned and dispatched when the one
    before is settled; when planning is over and nothing is left to run, the job is finished. A job with no
    unit yet is left to the `gen enqueue` or `gen resume` that is planning its first wave."""
    if job.planned_units == 0:
        return WaveStep(0, waiting=True)
    step = plan_next_wave(store, job.id, instructor, target=int(job.spec["target"]), start=job.planned_units,
                          max_attempts=FLEET_RETRIES, on_chunk=dispatch)
    if step.done:
        finish_fleet_job(store, job.id, int(job.spec["target"]))
    return step


def finish_fleet_job(store: Store, job_id: str, target: int) -> bool:
    """A fleet target job whose plan is over and with nothing pending or running is finished, keeping exactly
    `target` records (its failed units, if any, are not needed, or wait for `gen resume` when the plan ran out
    first)."""
    if not wave_settled(store, job_id, FLEET_RETRIES):
        return False
    keep_exactly(store, job_id, target)
    return store.set_job_status(job_id, JobState.FINISHED)


def target_status_line(store: Store, job_id: str, target: int | None) -> list[str]:
    if not target:
        return []
    accepted, settled, per_unit = observed_yield(store, job_id)
    surplus = store.record_counts(job_id).get(SURPLUS, 0)
    observed = f"{per_unit:.2f} records per settled unit" if per_unit is not None else "no unit settled yet"
    return [f"  target   {min(accepted, target)}/{target} accepted records; observed yield {observed} "
            f"({settled} units)" + (f"; {surplus} surplus records kept aside" if surplus else "")]
