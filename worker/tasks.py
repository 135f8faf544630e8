"""The one task: run a unit. Its arguments are checked; anything malformed is logged and dropped."""
from __future__ import annotations

import logging

from celery import Celery

log = logging.getLogger("gen.worker")


def register(app: Celery) -> None:
    @app.task(name="gen.run_unit", bind=True, acks_late=True, max_retries=None)
    def run_unit(self, job_id=None, unit_id=None, *args, **kwargs):  # noqa: ANN001
        if args or kwargs or not isinstance(job_id, str) or not isinstance(unit_id, int) or isinstance(unit_id, bool):
            log.error("refused a malformed gen.run_unit message: args=%r kwargs=%r",
                      [job_id, unit_id, *args][:4], sorted(kwargs)[:4])
            return "refused"
        from worker.runtime import get_runtime

        outcome = get_runtime().run_unit(job_id, unit_id)
        if outcome == "retry-later":
            # The teacher is unreachable or refused the key: the unit is pending again; ask again in a while.
            raise self.retry(countdown=30)
        return outcome
