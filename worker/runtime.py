"""One asyncio event loop per worker process, where every unit and teacher call of that process runs.

Celery's pool threads call `run_unit`, which hands the unit to the loop and waits for it to settle. The loop
also renews the leases of the units it holds (so a live worker keeps them) and sweeps for units whose worker
was lost (their lease passed), putting them back to pending and dispatching them again.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from gen.budget import RedisBudget
from gen.config import JobSpec, RetryPolicy, TeacherSpec
from gen.core.execute import UnitExecutor
from gen.core.jobs import load_instructor
from gen.errors import BudgetExhausted, GenError, TeacherUnavailable
from gen.providers import make_provider
from gen.ratelimit.redis_limiter import RedisRateLimiter, limiter_scope
from gen.store import Store
from gen.store.threads import in_db_thread
from gen.teacher import Meter, TeacherClient
from worker.dispatch import send_units
from worker.settings import FleetSettings, fleet_settings

log = logging.getLogger("gen.worker")


@dataclass
class JobRuntime:
    spec: JobSpec
    executor: UnitExecutor
    spec_json: dict
    checked_at: float = 0.0
    cost: float = 0.0


class WorkerRuntime:
    def __init__(self, settings: FleetSettings):
        self.settings = settings
        self.store = Store(settings.database_url)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gen-loop", daemon=True)
        self.jobs: dict[str, JobRuntime] = {}
        self.in_flight: set[int] = set()
        self._job_rows: dict[str, tuple[float, object]] = {}
        self._job_row_locks: dict[str, asyncio.Lock] = {}
        self.redis: aioredis.Redis | None = None
        self._job_lock: asyncio.Lock | None = None
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result()

    async def _start(self) -> None:
        # Import the SDKs now rather than on a job's first unit (about a second of import time).
        import gen.providers.mistral_provider  # noqa: F401
        import gen.providers.openai_provider  # noqa: F401
        from gen.instructors import available_instructors

        available_instructors()  # entry points scanned and instructor modules imported once, up front

        # A blocking pool: calls wait their turn for a connection instead of failing when all are busy.
        pool = aioredis.BlockingConnectionPool.from_url(self.settings.redis_url, max_connections=64, timeout=30)
        self.redis = aioredis.Redis(connection_pool=pool)
        self._job_lock = asyncio.Lock()
        self.loop.create_task(self._renew_leases())
        self.loop.create_task(self._sweep())

    # called from Celery's pool threads --------------------------------------------------------------------
    def run_units(self, job_id: str, unit_ids: list[int]) -> list[int]:
        """Run a batch concurrently on the loop; returns the unit ids to try again later."""
        return asyncio.run_coroutine_threadsafe(self._run_batch(job_id, unit_ids), self.loop).result()

    async def _run_batch(self, job_id: str, unit_ids: list[int]) -> list[int]:
        outcomes = await asyncio.gather(*(self._run(job_id, uid) for uid in unit_ids))
        return [uid for uid, outcome in zip(unit_ids, outcomes) if outcome == "retry-later"]

    # on the loop -----------------------------------------------------------------------------------------
    async def _job_row(self, job_id: str):
        """The job's row, read at most once a second per job (status changes reach workers within that)."""
        cached = self._job_rows.get(job_id)
        if cached is not None and time.monotonic() - cached[0] < 1.0:
            return cached[1]
        # One read per job at a time: a batch of units arriving together must not each query the row.
        lock = self._job_row_locks.setdefault(job_id, asyncio.Lock())
        async with lock:
            cached = self._job_rows.get(job_id)
            if cached is not None and time.monotonic() - cached[0] < 1.0:
                return cached[1]
            job = await in_db_thread(self.store.get_job, job_id)
            self._job_rows[job_id] = (time.monotonic(), job)
            return job

    async def _run(self, job_id: str, unit_id: int) -> str:
        job = await self._job_row(job_id)
        if job is None:
            log.error("refused a task for job %s, which is not in the database", job_id)
            return "unknown-job"
        if job.status in ("cancelled", "stopped"):
            return job.status  # acknowledged without work: the unit stays pending for `gen resume`
        try:
            runtime = await self._job_runtime(job.id, job.spec, job.updated_at)
        except GenError as exc:
            log.error("job %s cannot run on this worker: %s", job_id, exc)
            self.store.set_job_status(job_id, "blocked", str(exc))
            return "retry-later"
        budget = runtime.spec.run.budget_usd
        if budget is not None:
            if time.monotonic() - runtime.checked_at > 1.0:
                runtime.cost, runtime.checked_at = await in_db_thread(self.store.job_cost, job_id), time.monotonic()
            if runtime.cost >= budget:
                self.store.set_job_status(job_id, "stopped", f"budget reached: ${runtime.cost:.4f} of ${budget:.4f}")
                return "stopped"
        self.in_flight.add(unit_id)
        try:
            result = await runtime.executor.execute(unit_id)
        except BudgetExhausted as exc:  # no call started past the budget; the unit is pending again
            self.store.set_job_status(job_id, "stopped", str(exc))
            self._job_rows.pop(job_id, None)
            return "stopped"
        except TeacherUnavailable as exc:
            log.error("job %s unit %s: %s", job_id, unit_id, exc)
            self.store.set_job_status(job_id, "blocked", str(exc))
            return "retry-later"
        finally:
            self.in_flight.discard(unit_id)
        if job.status == "blocked":
            self.store.set_job_status(job_id, "active")
            self._job_rows.pop(job_id, None)
        return result.state or "skipped"

    async def _job_runtime(self, job_id: str, spec_json: dict, updated_at) -> JobRuntime:
        async with self._job_lock:
            cached = self.jobs.get(job_id)
            if cached is not None and cached.spec_json == spec_json:
                return cached
            spec = JobSpec.from_json(spec_json)
            instructor = load_instructor(spec)
            spec.check_keys()
            meter = Meter()
            budget = None
            if spec.run.budget_usd is not None:  # fleet-wide, seeded from what the database says was spent
                spent = await in_db_thread(self.store.job_cost, job_id)
                budget = RedisBudget(self.redis, job_id, spec.run.budget_usd, already_spent=spent)
            teachers = {name: TeacherClient(t, make_provider(t), self._limiter(t), meter,
                                            policy=RetryPolicy.of(t, spec.run), budget=budget)
                        for name, t in spec.teachers.items()}
            executor = UnitExecutor(self.store, job_id, spec, instructor, teachers, worker=self.settings.worker_name,
                                    lease_seconds=self.settings.lease_seconds)
            self.jobs[job_id] = JobRuntime(spec, executor, spec_json)
            return self.jobs[job_id]

    def _limiter(self, t: TeacherSpec) -> RedisRateLimiter:
        scope = limiter_scope(t.provider, t.endpoint, t.model, t.key_env)
        return RedisRateLimiter(self.redis, scope, rpm=t.rpm, tpm=t.tpm, max_concurrency=t.max_concurrency)

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_seconds / 3)
            try:
                self.store.renew_leases(sorted(self.in_flight), worker=self.settings.worker_name,
                                        lease_seconds=self.settings.lease_seconds)
            except Exception:
                log.exception("could not renew leases")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_seconds)
            try:
                lost = self.store.reclaim_expired()
                by_job: dict[str, list[int]] = {}
                for job_id, unit_id in lost:
                    by_job.setdefault(job_id, []).append(unit_id)
                for job_id, unit_ids in by_job.items():
                    job = self.store.get_job(job_id)
                    log.warning("job %s: %d units lost with their worker; dispatching them again", job_id,
                                len(unit_ids))
                    await asyncio.to_thread(send_units, job_id, unit_ids, job.queue if job else "gen")
            except Exception:
                log.exception("sweep for lost units failed")


_runtime: WorkerRuntime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> WorkerRuntime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = WorkerRuntime(fleet_settings())
        return _runtime
