"""The in-process driver behind `gen run`: many units in flight on one event loop, on the same core as the fleet."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gen.budget import LocalBudget
from gen.config import JobSpec
from gen.core.execute import UnitExecutor
from gen.core.progress import ProgressPrinter, Tally
from gen.core.teachers import build_teachers, close_teachers
from gen.errors import BudgetExhausted, TeacherUnavailable
from gen.instructors import Instructor
from gen.store import Store
from gen.teacher import Meter


@dataclass
class RunOutcome:
    tally: Tally
    stopped_for: str | None = None  # why dispatching stopped early (budget), None when every unit ran


async def run_job_locally(store: Store, job_id: str, spec: JobSpec, instructor: Instructor, *,
                          quiet: bool = False, progress_every: float | None = None) -> RunOutcome:
    meter = Meter()
    store.set_job_status(job_id, "active")
    store.release_running(job_id)
    unit_ids = store.runnable_unit_ids(job_id, max_attempts=spec.run.unit_attempts)
    base = store.stats(job_id)
    tally = Tally(total=base.total_units, base=base, meter=meter)
    progress = ProgressPrinter(tally, every=progress_every, quiet=quiet)
    budget = spec.run.budget_usd
    shared_budget = LocalBudget(budget, already_spent=base.cost_usd) if budget is not None else None
    teachers = build_teachers(spec, meter=meter, budget=shared_budget)
    executor = UnitExecutor(store, job_id, spec, instructor, teachers, worker="local")
    queue: asyncio.Queue[int] = asyncio.Queue()
    for uid in unit_ids:
        queue.put_nowait(uid)
    outcome = RunOutcome(tally)

    async def worker() -> None:
        while True:
            if outcome.stopped_for:
                return
            if budget is not None and base.cost_usd + meter.cost_usd >= budget:
                outcome.stopped_for = f"budget reached: ${base.cost_usd + meter.cost_usd:.4f} of ${budget:.4f}"
                return
            try:
                uid = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                result = await executor.execute(uid)
            except BudgetExhausted as exc:  # every call reserves its cost first: none started past the budget
                outcome.stopped_for = str(exc)
                return
            tally.count(result.state, result.records, result.duplicates)
            progress.tick()

    in_flight = min(len(unit_ids), max(t.max_concurrency for t in spec.teachers.values())) or 1
    tasks = [asyncio.create_task(worker()) for _ in range(in_flight)]
    ticker = asyncio.create_task(_tick(progress))
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()
    finally:
        ticker.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, ticker, return_exceptions=True)
        await close_teachers(teachers)
        progress.close()
        # A unit interrupted while its claim was in flight is still marked running: this driver was its only
        # runner, so it goes back to pending now rather than at the next run.
        store.release_running(job_id)
    if outcome.stopped_for:
        store.set_job_status(job_id, "stopped", outcome.stopped_for)
    elif not store.runnable_unit_ids(job_id, max_attempts=spec.run.unit_attempts):
        store.set_job_status(job_id, "finished")
    return outcome


async def _tick(progress: ProgressPrinter) -> None:
    while True:
        await asyncio.sleep(0.5)
        progress.tick()


__all__ = ["run_job_locally", "RunOutcome", "TeacherUnavailable"]
