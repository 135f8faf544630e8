"""The one task: run a batch of a job's units. Anything malformed is dead-lettered, never run, never fatal.

A message carries several unit ids so Celery's per-message cost is paid once per batch; the units of a batch
run concurrently on the worker's event loop, and the message is acknowledged when all of them are settled.
Redelivering a batch is harmless: units already finished or held by a live worker are skipped at claim time.
Units that could not run now (a teacher unreachable, the database away) go back in a later message.
"""
from __future__ import annotations

import logging

from celery import Celery

from worker.deadletter import dead_letter

log = logging.getLogger("gen.worker")
MAX_BATCH = 1000


def valid_arguments(job_id, unit_ids) -> bool:  # noqa: ANN001
    return (isinstance(job_id, str) and 0 < len(job_id) <= 64 and isinstance(unit_ids, list)
            and 0 < len(unit_ids) <= MAX_BATCH
            and all(isinstance(u, int) and not isinstance(u, bool) for u in unit_ids))


def register(app: Celery) -> None:
    @app.task(name="gen.run_units", bind=True, acks_late=True, max_retries=None,
              Strategy="worker.strategy:guarded")
    def run_units(self, job_id=None, unit_ids=None, *args, **kwargs):  # noqa: ANN001
        if args or kwargs or not valid_arguments(job_id, unit_ids):
            dead_letter("gen.run_units arguments are not (job id, [unit ids])",
                        {"args": [job_id, unit_ids, *args][:4], "kwargs": sorted(kwargs)[:4]})
            return "refused"
        from worker.runtime import get_runtime

        retry, delay = get_runtime(self.app).run_units(job_id, unit_ids)
        if retry:
            raise self.retry(args=[job_id, retry], countdown=delay)
        return "ok"
