"""The in-process driver behind `gen run`: many units in flight on one event loop, on the same job lifecycle as
the fleet (gen.core.lifecycle). Units are fed from the database a page at a time (flat memory at any job size)
while planning continues in a thread.

Ctrl-C once drains: no new call starts, calls in flight finish and are recorded (a countdown shows how long at
most); Ctrl-C again stops at once (calls in flight are recorded as cancelled).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass

from gen import collector
from gen.budget import LocalBudget
from gen.config import JobSpec
from gen.core.journal import CallGate
from gen.core.lease import LeaseKeeper
from gen.core.lifecycle import JobRun, planner_for, settle_job
from gen.core.progress import ProgressPrinter, Tally
from gen.errors import BudgetExhausted, TeacherUnavailable
from gen.instructors import Instructor
from gen.store import Job, Store
from gen.store.states import JobState
from gen.store.threads import in_db_thread

LOCAL_LEASE_SECONDS = 300.0
PAGE = 500
MAX_UNITS_AT_ONCE = 10_000  # units run at once (a batch-mode teacher admits a whole batch of waiting requests)


def driver_name() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


@dataclass
class RunOutcome:
    tally: Tally
    stopped_for: str | None = None  # why dispatching stopped early (budget), None when every unit ran
    interrupted: bool = False       # drained after Ctrl-C
    drained_calls: int = 0          # calls that were in flight at Ctrl-C and finished


async def run_job_locally(store: Store, job: Job, spec: JobSpec, instructor: Instructor, *,
                          quiet: bool = False, progress_every: float | None = None) -> RunOutcome:
    driver = f"local:{driver_name()}"
    gate = CallGate()
    leases = LeaseKeeper(store, driver, LOCAL_LEASE_SECONDS)
    store.set_job_status(job.id, JobState.ACTIVE)
    store.release_running(job.id, worker_prefix="local:")
    store.reopen_failed(job.id)  # running the job again retries its failed units (what its last run said to do)
    budget = None
    if spec.run.budget_usd is not None:  # every call reserves its cost first: none starts past the budget
        budget = LocalBudget(spec.run.budget_usd, already_spent=store.job_cost(job.id))
    run = JobRun(store, job.id, spec, instructor, leases=leases, gate=gate, budget=budget)
    collector.resume()  # start-up is over (the teachers are built): the collector runs again (gen.collector)
    base = store.stats(job.id)
    tally = Tally(total=max(job.unit_count, base.total_units), base=base, meter=run.meter)
    progress = ProgressPrinter(tally, every=progress_every, quiet=quiet)
    outcome = RunOutcome(tally)
    in_flight = min(max(t.calls_at_once for t in spec.teachers.values()), MAX_UNITS_AT_ONCE) or 1
    queue: asyncio.Queue[int | None] = asyncio.Queue(maxsize=in_flight * 2)
    stop_planning = threading.Event()
    loop = asyncio.get_running_loop()
    planned = asyncio.Event()  # set when the planner has committed a chunk (or stopped): the feeder looks at once

    def on_chunk(ids: list[int]) -> None:  # in the planner's thread, after the chunk's transaction committed
        tally.total += len(ids)
        loop.call_soon_threadsafe(planned.set)

    planner = None
    if not job.planning_done:
        planner = asyncio.create_task(asyncio.to_thread(
            planner_for(spec), store, job.id, instructor, start=job.planned_units, stop=stop_planning,
            on_chunk=on_chunk))
        planner.add_done_callback(lambda _: planned.set())

    failure: list[BaseException] = []

    async def feed() -> None:
        after = -1
        try:
            while not gate.draining:
                planned.clear()  # before reading: a chunk committed after this read sets it again
                page = await in_db_thread(store.runnable_units, job.id, max_attempts=spec.run.unit_attempts,
                                          after_seq=after, limit=PAGE)
                for unit_id, seq in page:
                    await queue.put(unit_id)
                    after = seq
                if page:
                    continue
                if planner is not None and not planner.done():
                    # The first units are read the moment the planner commits them (a 0.1 s poll cost every
                    # new job that much before its first request); the timeout is only a safety net.
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(planned.wait(), 0.1)
                    continue
                if planner is not None and planner.exception() is not None:
                    raise planner.exception()  # type: ignore[misc]
                if not await in_db_thread(store.runnable_units, job.id, max_attempts=spec.run.unit_attempts,
                                          after_seq=after, limit=1):
                    break
        except Exception as exc:  # the planner or the database failed: the run stops and says why
            failure.append(exc)
            gate.draining = True
        for _ in range(in_flight):
            await queue.put(None)

    async def work() -> None:
        while True:
            unit_id = await queue.get()
            if unit_id is None or gate.draining:
                return
            try:
                result = await run.run_unit(unit_id)
            except BudgetExhausted as exc:
                outcome.stopped_for = str(exc)
                gate.draining = True
                return
            tally.count(result.state, result.records, result.duplicates)
            progress.tick()

    main = asyncio.current_task()
    interrupts = {"count": 0, "at": 0.0, "calls_then": 0}

    def on_interrupt() -> None:
        interrupts["count"] += 1
        if interrupts["count"] == 1:
            gate.draining = True
            outcome.interrupted = True
            interrupts["at"], interrupts["calls_then"] = time.monotonic(), gate.in_flight
            stop_planning.set()
            feeder.cancel()
            while not queue.empty():  # units not started stay pending; idle workers wake and leave
                queue.get_nowait()
            for _ in range(in_flight):
                queue.put_nowait(None)
        elif main is not None:
            main.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
        handled = True
    except (NotImplementedError, RuntimeError):  # not the main thread (tests), or no signals here
        handled = False
    longest = max(t.timeout for t in spec.teachers.values())
    feeder = asyncio.create_task(feed())
    workers = [asyncio.create_task(work()) for _ in range(in_flight)]
    renewer = asyncio.create_task(_keep(leases, store, job.id, driver))
    ticker = asyncio.create_task(_tick(progress, gate, interrupts, longest))
    cancelled = False
    try:
        await asyncio.gather(*workers)
        if failure:
            raise failure[0]
    except asyncio.CancelledError:
        cancelled = True
        raise KeyboardInterrupt from None
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGINT)
            # Wrapping up takes a moment (threads, the summary): more Ctrl-C presses now change nothing. The
            # caller (gen.core.run_command) restores the default handler when it is done.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_planning.set()
        for task in (ticker, renewer, feeder, *workers):
            task.cancel()
        await asyncio.gather(ticker, renewer, feeder, *workers, return_exceptions=True)
        if planner is not None:
            await asyncio.gather(planner, return_exceptions=True)
        await run.close()
        progress.close()
        outcome.drained_calls = interrupts["calls_then"]
        # A unit interrupted while its claim was in flight is still marked running: this driver was its only
        # runner, so it goes back to pending now rather than at the next run.
        store.release_running(job.id, worker_prefix="local:")
        if cancelled:
            store.set_job_status(job.id, JobState.ACTIVE)
    if planner is not None and planner.done() and not planner.cancelled() and planner.exception() is not None:
        raise planner.exception()  # type: ignore[misc]
    if outcome.stopped_for is None and not outcome.interrupted:
        settle_job(store, job.id, max_attempts=spec.run.unit_attempts)
    return outcome


async def _keep(leases: LeaseKeeper, store: Store, job_id: str, driver: str) -> None:
    """Renew the units' leases and this process's hold on the job while the run lives."""
    async def hold() -> None:
        while True:
            await asyncio.sleep(20)
            try:
                await in_db_thread(store.take_driver, job_id, driver, 60.0)
            except Exception:
                pass  # the database is away; the leases' deadlines stop the units if it stays away
    await asyncio.gather(leases.run(), hold())


async def _tick(progress: ProgressPrinter, gate: CallGate, interrupts: dict, longest: float) -> None:
    while True:
        await asyncio.sleep(0.5)
        if gate.draining and interrupts["count"] == 1:
            left = max(0.0, longest - (time.monotonic() - interrupts["at"]))
            print(f"\rgen run: stopping: {gate.in_flight} calls in flight finish and are kept (at most {left:.0f}s);"
                  " Ctrl-C again to stop now\x1b[K", end="", file=sys.stderr, flush=True)
        else:
            progress.tick()


__all__ = ["run_job_locally", "RunOutcome", "TeacherUnavailable", "driver_name"]
