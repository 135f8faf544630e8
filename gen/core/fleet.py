"""The fleet side of the job lifecycle: enqueue, resume and the supervisor that heals a stalled job.

The queue only dispatches; the database says what still needs doing. How messages reach workers is a
`Dispatcher` (worker.dispatch.CeleryDispatcher): this module never imports Celery.

The supervisor (run by one worker at a time, elected through the dispatcher's lock) puts running units whose
lease passed back to pending, and sends again the pending units of active jobs whose queue is empty while their
last message is older than `stall_seconds`: a Redis that restarted empty, messages dropped while the database was
down, a worker lost with its prefetched messages. A stall costs a delay, never a manual step. In target mode
(`instructor.target`) it also plans each next wave when the one before is settled, with the same planner as
`gen run` (gen.core.target), dispatches it, and finishes the job when the target is met.
"""
from __future__ import annotations

import sys

import logging
from pathlib import Path
from typing import Protocol

from gen import collector
from gen.config import JobSpec, read_job_file
from gen.core.jobs import load_instructor
from gen.core.lifecycle import open_job, plan_units
from gen.core.target import FLEET_RETRIES, accepted_records, advance_fleet_job, fleet_target_jobs, plan_next_wave
from gen.errors import UsageError
from gen.store import Job, Store
from gen.store.states import JobState

log = logging.getLogger("gen.fleet")


class Dispatcher(Protocol):
    def check(self) -> None:
        """Raise GenError (one line, URL redacted) when the queue cannot be reached."""

    def send(self, job_id: str, unit_ids: list[int], queue: str) -> int:
        """Send messages for these units; returns how many units were sent."""

    def queue_length(self, queue: str) -> int | None:
        """Messages waiting in `queue` (None: unknown)."""


def dispatch(store: Store, dispatcher: Dispatcher, job_id: str, unit_ids: list[int], queue: str) -> int:
    if not unit_ids:
        return 0
    sent = dispatcher.send(job_id, unit_ids, queue)
    store.mark_dispatched(unit_ids)
    return sent


def enqueue_job_file(db_url: str, file: Path, dispatcher: Dispatcher, *, queue: str = "gen",
                     force_new: bool = False, check_keys: bool = True) -> Job:
    """Validate, record the job, plan its units in chunks and dispatch each chunk as it is planned (the first
    calls leave while a large job is still being planned). Refusals write nothing."""
    spec = read_job_file(file)
    instructor = load_instructor(spec, database_url=db_url)
    next(iter(instructor.plan()), None)  # inputs read and checked before anything is written
    if check_keys:
        spec.check_keys()
    dispatcher.check()
    store = Store(db_url)
    try:
        existing = None if force_new else store.find_resumable(spec.name, spec.spec_hash)
        if existing is not None:
            stats = store.stats(existing.id)
            raise UsageError(f"job {existing.id} already exists for this file ({stats.finished_units}/"
                             f"{stats.total_units} units finished): `gen resume {existing.id}` continues it, "
                             "`gen enqueue --new` starts another")
        job = open_job(store, spec, instructor, resume=False, queue=queue).job
        from gen.core.estimate import estimate_for_new_job, one_line

        print(f"gen enqueue: {one_line(estimate_for_new_job(store, job.id, spec, instructor, file_hash=spec.spec_hash))}",
              file=sys.stderr, flush=True)
        collector.resume()  # start-up is over (gen.collector): a plan of any size is made with the collector on
        send = lambda ids: dispatch(store, dispatcher, job.id, ids, queue)  # noqa: E731
        if spec.target is not None:  # the first wave; the supervisor plans the next ones (gen.core.target)
            plan_next_wave(store, job.id, instructor, target=spec.target, start=0, max_attempts=FLEET_RETRIES,
                           on_chunk=send)
        else:
            plan_units(store, job.id, instructor, start=0, on_chunk=send)
        return store.get_job(job.id) or job
    finally:
        store.close()


def resume_job(store: Store, job: Job, dispatcher: Dispatcher, *, budget_usd: float | None = None) -> int:
    """Finish planning if it was cut off, re-dispatch every unit not finished and not in flight (failed units get
    one more attempt); lift a cancel, stop or block. In target mode only a first wave is planned here (the supervisor plans the next ones), and a
    job that has met its target has nothing to resume."""
    spec = JobSpec.from_json(job.spec)
    if budget_usd is not None:
        data = job.spec
        data["run"] = {**(data.get("run") or {}), "budget_usd": budget_usd}
        store.update_job_spec(job.id, data)
        spec = JobSpec.from_json(data)
    dispatcher.check()
    if spec.target is not None and job.planning_done and accepted_records(store, job.id) >= spec.target:
        return 0
    store.set_job_status(job.id, JobState.ACTIVE)
    store.reclaim_expired([job.id])
    store.reopen_failed(job.id)
    sent = 0
    if spec.target is not None:
        if job.planned_units == 0 and not job.planning_done:  # `gen enqueue` stopped before its first wave
            instructor = load_instructor(spec, database_url=store.url)
            plan_next_wave(store, job.id, instructor, target=spec.target, start=0, max_attempts=FLEET_RETRIES)
    elif not job.planning_done:
        instructor = load_instructor(spec, database_url=store.url)
        plan_units(store, job.id, instructor, start=job.planned_units)
    ids = store.undispatched_unit_ids(job.id, max_attempts=spec.run.unit_attempts)
    sent += dispatch(store, dispatcher, job.id, ids, job.queue)
    return sent


class Supervisor:
    def __init__(self, store: Store, dispatcher: Dispatcher, *, stall_seconds: float):
        self.store = store
        self.dispatcher = dispatcher
        self.stall_seconds = stall_seconds
        self._instructors: dict[str, tuple[dict, object]] = {}

    def sweep(self) -> dict[str, int]:
        """One pass: lost units back to pending and re-sent; stalled pending units re-sent. Returns counts."""
        counts = {"lost": 0, "stalled": 0}
        by_job: dict[tuple[str, str], list[int]] = {}
        for job_id, unit_id in self.store.reclaim_expired():
            job = self.store.get_job(job_id)
            by_job.setdefault((job_id, job.queue if job else "gen"), []).append(unit_id)
            counts["lost"] += 1
        for (job_id, queue), ids in by_job.items():
            log.warning("job %s: %d units lost with their worker; dispatching them again", job_id, len(ids))
            dispatch(self.store, self.dispatcher, job_id, ids, queue)
        empty: dict[str, bool] = {}
        stalled: dict[tuple[str, str], list[int]] = {}
        for job_id, queue, unit_id in self.store.stalled_units(older_than=self.stall_seconds):
            if queue not in empty:
                empty[queue] = self.dispatcher.queue_length(queue) == 0
            if empty[queue]:
                stalled.setdefault((job_id, queue), []).append(unit_id)
        for (job_id, queue), ids in stalled.items():
            log.warning("job %s: %d pending units have no message in queue '%s' (a restarted Redis, messages "
                        "dropped during a database outage); dispatching them again", job_id, len(ids), queue)
            dispatch(self.store, self.dispatcher, job_id, ids, queue)
            counts["stalled"] += len(ids)
        return counts

    def advance_targets(self) -> dict[str, int]:
        """Target mode: for every active fleet job planning in waves, the next wave planned and dispatched once
        the one before is settled, or the job finished when its target is met (gen.core.target). Returns counts."""
        counts = {"planned": 0, "finished": 0}
        jobs = fleet_target_jobs(self.store)
        for job in jobs:
            try:
                cached = self._instructors.get(job.id)
                if cached is None or cached[0] != job.spec:
                    spec = JobSpec.from_json(job.spec)
                    cached = (job.spec, load_instructor(spec, database_url=self.store.url))
                    self._instructors[job.id] = cached
                step = advance_fleet_job(self.store, job, cached[1],  # type: ignore[arg-type]
                                         lambda ids, j=job: dispatch(self.store, self.dispatcher, j.id, ids, j.queue))
            except Exception as exc:  # one job's trouble (its inputs, its plan) holds back no other job
                log.warning("job %s: target mode: the next wave could not be planned (%s: %s)", job.id,
                            type(exc).__name__, exc)
                continue
            if step.planned:
                log.info("job %s: target mode: a wave of %d units planned and dispatched", job.id, step.planned)
                counts["planned"] += step.planned
            if step.done:
                log.info("job %s: target mode: planning over (%s)", job.id,
                         "target met" if step.reached else "the instructor's plan ran out")
                counts["finished"] += 1
        for job_id in set(self._instructors) - {job.id for job in jobs}:
            del self._instructors[job_id]
        return counts
