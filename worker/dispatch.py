"""Sending units to the queue. The queue only dispatches: the database decides what still needs doing."""
from __future__ import annotations

from kombu.exceptions import KombuError

from gen.config import check_url_port
from gen.errors import GenError, UsageError
from gen.secrets import redact_url as redacted
from gen.secrets import register_url_password
from worker.app import TASK_RUN_UNITS, get_app


def check_broker(redis_url: str) -> None:
    """Fail before anything is written when the queue cannot be reached."""
    import redis

    register_url_password(redis_url)
    check_url_port(redis_url, what="GEN_REDIS_URL")
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=3).ping()
    except redis.RedisError as exc:
        message = str(exc).strip().rstrip(".")
        reason = message.rsplit(". ", 1)[-1] if ". " in message else (message or type(exc).__name__)
        raise GenError(f"cannot reach the queue at {redacted(redis_url)} (GEN_REDIS_URL): {reason}") from None
    except ValueError as exc:  # a URL redis-py cannot read
        raise UsageError(f"GEN_REDIS_URL is not a Redis URL ({redacted(str(exc))}): {redacted(redis_url)}") from None


def send_units(job_id: str, unit_ids: list[int], queue: str = "gen", *, batch_size: int | None = None) -> int:
    """Send a job's units in batches (one message per batch); returns how many units were sent."""
    try:
        return _send(job_id, unit_ids, queue, batch_size)
    except KombuError as exc:
        raise GenError(f"job {job_id}: its units could not be sent to the queue ({exc}); they are kept in the "
                       f"database: `gen resume {job_id}` sends them once the queue is back") from None


def _send(job_id: str, unit_ids: list[int], queue: str, batch_size: int | None) -> int:
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
    instructor = load_instructor(spec, database_url=db_url)
    planned = [(u.key, u.payload) for u in instructor.plan()]
    if check_keys:
        spec.check_keys()
    from worker.settings import fleet_settings

    check_broker(fleet_settings().redis_url)
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
    from worker.settings import fleet_settings

    check_broker(fleet_settings().redis_url)
    store.set_job_status(job.id, "active")
    ids = store.undispatched_unit_ids(job.id, max_attempts=spec.run.unit_attempts)
    store.reclaim_expired([job.id])
    return send_units(job.id, ids, job.queue)
