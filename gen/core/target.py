"""Target mode (`instructor.target: N`): plan units in waves until N records pass every filter, check, judge and
dedup, then keep exactly N.

The first wave plans what N records need at one record per unit; each next wave plans what the records still
missing need at the yield observed so far (accepted records per settled unit), so the plan never overshoots by
more than one wave's expected excess. A wave is planned only once the units before it are settled. When N
records are accepted, planning ends and any record past the N-th (from units that were already in flight) is
kept as kind `surplus`: stored and counted, never exported. The plan stops early, saying so, when the
instructor's plan runs out (`count` caps it) or when `run.budget_usd` stops the job.
"""
from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable

from sqlalchemy import func, update
from sqlmodel import select

from gen.errors import UsageError
from gen.instructors import Instructor
from gen.instructors.base import MAX_UNITS
from gen.store import Record, Store, UnitState

SURPLUS = "surplus"
NOT_ACCEPTED = ("rejected", SURPLUS)
DEFAULT_CAP_FACTOR = 10  # without `count`, the plan may hold this many units (or items) per target record


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


def next_wave(target: int, accepted: int, yield_per_unit: float | None, last_wave: int) -> int:
    """Units the records still missing need at the observed yield (double the last wave while nothing passed)."""
    missing = target - accepted
    if missing <= 0:
        return 0
    if yield_per_unit is None:
        return missing
    if yield_per_unit <= 0:
        return max(1, last_wave * 2)
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


def _settled(store: Store, job_id: str, max_attempts: int) -> bool:
    units = store.stats(job_id).units
    return not units[UnitState.RUNNING] and not store.runnable_unit_ids(job_id, max_attempts=max_attempts, limit=1)


def plan_waves(store: Store, job_id: str, instructor: Instructor, *, target: int, start: int, max_attempts: int,
               on_chunk: Callable[[list[int]], None] | None = None, stop: threading.Event | None = None,
               poll: float = 0.1) -> int:
    """Plan in waves until `target` records are accepted (see the module's docstring). Returns the plan position
    reached; marks planning done when the target is met or the instructor's plan is exhausted."""
    units = itertools.islice(instructor.plan(), start, None)
    position, wave = start, 0
    while stop is None or not stop.is_set():
        while not _settled(store, job_id, max_attempts):  # the wave before is still running
            if stop is not None and stop.wait(poll):
                return position
            if stop is None:
                time.sleep(poll)
        accepted, _, per_unit = observed_yield(store, job_id)
        size = next_wave(target, accepted, per_unit, wave)
        if size == 0:
            keep_exactly(store, job_id, target)
            store.finish_planning(job_id)
            return position
        batch = [(u.key, u.payload) for u in itertools.islice(units, size)]
        if not batch:  # the instructor's plan ran out before the target
            store.finish_planning(job_id)
            return position
        if position + len(batch) > MAX_UNITS:
            raise UsageError(f"the job plans more than {MAX_UNITS:,} units: split it into several jobs")
        ids = store.add_units(job_id, position, batch)
        position, wave = position + len(batch), len(batch)
        if on_chunk is not None:
            on_chunk(ids)
    return position


def target_status_line(store: Store, job_id: str, target: int | None) -> list[str]:
    if not target:
        return []
    accepted, settled, per_unit = observed_yield(store, job_id)
    surplus = store.record_counts(job_id).get(SURPLUS, 0)
    observed = f"{per_unit:.2f} records per settled unit" if per_unit is not None else "no unit settled yet"
    return [f"  target   {min(accepted, target)}/{target} accepted records; observed yield {observed} "
            f"({settled} units)" + (f"; {surplus} surplus records kept aside" if surplus else "")]
