"""The Celery app: Redis broker, JSON only, late acks, one prefetch, a visibility timeout longer than any unit.

Why a thread pool: Celery has no asyncio pool, and a prefork process with a sync call holds one request in flight.
Each worker process instead runs one asyncio event loop in a background thread (`worker.runtime`) where every
unit and every teacher call lives, sharing one HTTP client per teacher. Celery's pool threads only wait: a task
hands its unit to the loop and blocks until the unit is settled, so the task is acknowledged (late) only after
the unit's records are stored. `--concurrency` is therefore the number of units in flight per process.
"""
from __future__ import annotations

import logging
import os
from functools import lru_cache

from celery import Celery
from celery.signals import worker_ready

from gen.secrets import install_log_scrubber
from worker.settings import fleet_settings
log = logging.getLogger("gen.worker")


def create_app() -> Celery:
    install_log_scrubber()  # keys and URL passwords never reach a worker log line
    settings = fleet_settings()
    app = Celery("gen", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],           # never pickle: a pickle-accepting worker runs what anyone sends
        result_serializer="json",
        task_ignore_result=True,           # the database holds every outcome
        task_acks_late=True,               # acknowledged after the unit is settled...
        task_reject_on_worker_lost=True,   # ...and handed back if the worker dies first
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_connection_retry_on_startup=True,
        task_default_queue="gen",
        worker_hijack_root_logger=False,
        worker_send_task_events=False,     # three Redis messages a task; `gen worker --events` for Flower
        task_send_sent_event=False,
    )
    # A line per HTTP request or per task is not a log but a cost at hundreds of units a second;
    # GEN_LOG_TASKS=1 brings the per-task lines back.
    for noisy in ("httpx2", "httpx", "openai", "mistralai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if os.environ.get("GEN_LOG_TASKS") != "1":
        logging.getLogger("celery.app.trace").setLevel(logging.WARNING)
    from worker.tasks import register

    register(app)
    worker_ready.connect(_start_runtime, weak=False)
    return app


def _start_runtime(sender=None, **_kwargs) -> None:  # noqa: ANN001
    """Start the event loop, lease renewal and the supervisor as soon as the worker is up, so an idle worker also
    rescues units that died with another worker."""
    from worker.runtime import get_runtime

    get_runtime(sender.app if sender is not None else get_app())


@lru_cache(maxsize=1)
def get_app() -> Celery:
    return create_app()
