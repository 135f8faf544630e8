"""Sending units to the queue. The queue only dispatches: the database decides what still needs doing."""
from __future__ import annotations

from worker.app import TASK_RUN_UNITS, get_app


def send_units(job_id: str, unit_ids: list[int], queue: str = "gen", *, batch_size: int | None = None) -> int:
    """Send a job's units in batches (one message per batch); returns how many units were sent."""
    app = get_app()
    size = batch_size or batch_size_for(len(unit_ids))
    with app.producer_or_acquire() as producer:
        for start in range(0, len(unit_ids), size):
            app.send_task(TASK_RUN_UNITS, args=[job_id, unit_ids[start:start + size]], queue=queue,
                          producer=producer)
    return len(unit_ids)


def batch_size_for(units: int) -> int:
    """Small jobs spread unit by unit over every worker; large ones go 20 to a message."""
    return max(1, min(20, units // 50))


def enqueue_job_file(db_url: str, file, *, queue: str = "gen", force_new: bool = False, check_keys: bool = True):
    """Validate, record the job and its units, dispatch them; return the job. Refusals write nothing."""
    from gen.config import read_job_file
    from gen.core.jobs import load_instructor
    from gen.errors import UsageError
    from gen.store import Store

    spec = read_job_file(file)
    instructor = load_instructor(spec)
    planned = [(u.key, u.payload) for u in instructor.plan()]
    if check_keys:
        spec.check_keys()
    store = Store(db_url)
    try:
        existing = None if force_new else store.find_resumable(spec.name, spec.spec_hash)
        if existing is not None:
            stats = store.stats(existing.id)
            raise UsageError(f"job {existing.id} already exists for this file ({stats.finished_units}/"
                             f"{stats.total_units} units finished): `gen resume {existing.id}` continues it, "
                             "`gen enqueue --new` starts another")
        job = store.create_job(name=spec.name, instructor=spec.instructor_type, spec=spec.to_json(),
                               spec_hash=spec.spec_hash, units=planned, queue=queue)
        ids = store.runnable_unit_ids(job.id, max_attempts=spec.run.unit_attempts)
        send_units(job.id, ids, queue)
        return job
    finally:
        store.close()


def resume_job(store, job, *, budget_usd: float | None = None) -> int:
    """Re-dispatch every unit that is not finished and not in flight; lift a cancel, stop or block."""
    from gen.config import JobSpec

    spec = JobSpec.from_json(job.spec)
    if budget_usd is not None:
        data = job.spec
        data["run"] = {**(data.get("run") or {}), "budget_usd": budget_usd}
        store.update_job_spec(job.id, data)
        spec = JobSpec.from_json(data)
    store.set_job_status(job.id, "active")
    ids = store.undispatched_unit_ids(job.id, max_attempts=spec.run.unit_attempts)
    store.reclaim_expired([job.id])
    return send_units(job.id, ids, job.queue)
