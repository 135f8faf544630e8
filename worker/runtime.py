"""One asyncio event loop per worker process, where every unit and teacher call of that process runs.

Celery's pool threads call `run_units`, which hands the batch to the loop and waits for it to settle. Everything
about a job (teachers, budget, states, fencing, recovery) is the core's (gen.core.lifecycle, gen.core.fleet); this
module only keeps one `JobRun` per job, the leases of this process, and a turn at being the fleet's supervisor.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gen import collector
from gen.budget import RedisBudget
from gen.config import JobSpec, TeacherSpec
from gen.core.fleet import Supervisor
from gen.core.jobs import load_instructor
from gen.core.lease import LeaseKeeper
from gen.core.lifecycle import JobRun, settle_job
from gen.errors import BudgetExhausted, GenError, TeacherUnavailable
from gen.ratelimit.redis_limiter import RedisRateLimiter, limiter_scope
from gen.store import Store
from gen.store.states import HALTED, JobState
from gen.store.threads import in_db_thread, is_outage
from worker.deadletter import dead_letter
from worker.dispatch import CeleryDispatcher
from worker.settings import FleetSettings, fleet_settings

log = logging.getLogger("gen.worker")
TEACHER_RETRY_SECONDS = 30.0
REDIS_CONNECTIONS = 64  # the loop's Redis pool (rate limiter, budget): calls beyond it wait for a connection
TARGET_TICK_SECONDS = 1.0


class WorkerRuntime:
    def __init__(self, settings: FleetSettings, app):  # noqa: ANN001 (the Celery app, to send messages with)
        self.settings = settings
        self.store = Store(settings.database_url)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gen-loop", daemon=True)
        self.runs: dict[str, tuple[dict, JobRun]] = {}
        self.leases = LeaseKeeper(self.store, settings.worker_name, settings.lease_seconds)
        self.dispatcher = CeleryDispatcher(app, settings.redis_url)
        self._job_rows: dict[str, tuple[float, object]] = {}
        self._job_row_locks: dict[str, asyncio.Lock] = {}
        self._db_backoff = 1.0
        self.redis: aioredis.Redis | None = None
        self._job_lock: asyncio.Lock | None = None
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result()

    async def _start(self) -> None:
        # Import the SDKs now rather than on a job's first unit (about a second of import time).
        import gen.providers.mistral_provider  # noqa: F401
        import gen.providers.openai_provider  # noqa: F401
        from gen.instructors import available_instructors
        from gen.providers import tls

        tls.prepare()  # and the teachers' TLS context (with its imports), not on a job's first unit either

        available_instructors()  # entry points scanned and instructor modules imported once, up front
        # A blocking pool: calls wait their turn for a connection instead of failing when all are busy.
        pool = aioredis.BlockingConnectionPool.from_url(self.settings.redis_url, max_connections=REDIS_CONNECTIONS,
                                                        timeout=30)
        self.redis = aioredis.Redis(connection_pool=pool)
        await self._open_redis_connections()
        self._job_lock = asyncio.Lock()
        self.loop.create_task(self.leases.run())
        self.loop.create_task(self._supervise())
        self.loop.create_task(self._advance_targets())

    async def _open_redis_connections(self) -> None:
        """Open the pool's connections now. A job's first units all ask the fleet's rate limiter at once; opening
        the connections then (a connect and a handshake each, on the loop) held the first teacher request back
        by 0.1 s, 0.5 s on a busy machine (bench/rate.py --only fleet). If Redis is away they open when used."""
        try:
            await asyncio.wait_for(asyncio.gather(*(self.redis.ping() for _ in range(REDIS_CONNECTIONS))), 10)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            log.warning("could not open connections to Redis at start-up (%s); they open when used",
                        type(exc).__name__)

    # called from Celery's pool threads --------------------------------------------------------------------
    def run_units(self, job_id: str, unit_ids: list[int]) -> tuple[list[int], float]:
        """Run a batch concurrently on the loop; returns the unit ids to send again later, and after how long."""
        return asyncio.run_coroutine_threadsafe(self._run_batch(job_id, unit_ids), self.loop).result()

    async def _run_batch(self, job_id: str, unit_ids: list[int]) -> tuple[list[int], float]:
        outcomes = await asyncio.gather(*(self._run(job_id, uid) for uid in unit_ids))
        retry = [uid for uid, outcome in zip(unit_ids, outcomes) if outcome in ("teacher-later", "db-later")]
        if any(o == "db-later" for o in outcomes):
            delay, self._db_backoff = self._db_backoff, min(self._db_backoff * 2, 60.0)
        else:
            delay = TEACHER_RETRY_SECONDS
            if any(o in ("done", "rejected", "failed") for o in outcomes):
                self._db_backoff = 1.0
                try:
                    job = await self._job_row(job_id)
                    if job is not None:
                        max_attempts = JobSpec.from_json(job.spec).run.unit_attempts
                        await in_db_thread(settle_job, self.store, job_id, max_attempts=max_attempts)
                except Exception as exc:  # settling is a convenience (status shows it anyway)
                    log.debug("could not settle job %s: %s", job_id, exc)
        return retry, delay

    # on the loop -----------------------------------------------------------------------------------------
    async def _job_row(self, job_id: str):
        """The job's row, read at most once a second per job (status changes reach workers within that)."""
        cached = self._job_rows.get(job_id)
        if cached is not None and time.monotonic() - cached[0] < 1.0:
            return cached[1]
        lock = self._job_row_locks.setdefault(job_id, asyncio.Lock())
        async with lock:
            cached = self._job_rows.get(job_id)
            if cached is not None and time.monotonic() - cached[0] < 1.0:
                return cached[1]
            job = await in_db_thread(self.store.get_job, job_id)
            self._job_rows[job_id] = (time.monotonic(), job)
            return job

    async def _run(self, job_id: str, unit_id: int) -> str:
        try:
            return await self._run_unit(job_id, unit_id)
        except Exception as exc:
            if is_outage(exc):
                log.warning("job %s unit %s: the database is unreachable (%s); the unit is sent again later",
                            job_id, unit_id, type(exc).__name__)
                return "db-later"
            raise

    async def _run_unit(self, job_id: str, unit_id: int) -> str:
        job = await self._job_row(job_id)
        if job is None:
            dead_letter(f"job {job_id} is not in the database", {"job_id": job_id, "unit_id": unit_id})
            return "unknown-job"
        if job.status in HALTED:
            return job.status  # acknowledged without work: the unit stays pending for `gen resume`
        try:
            run = await self._job_run(job.id, job.spec)
        except GenError as exc:
            log.error("job %s cannot run on this worker: %s", job_id, exc)
            await in_db_thread(self.store.set_job_status, job_id, JobState.BLOCKED, str(exc))
            return "teacher-later"
        try:
            result = await run.run_unit(unit_id)
        except BudgetExhausted:
            self._job_rows.pop(job_id, None)
            return JobState.STOPPED
        except TeacherUnavailable as exc:
            log.error("job %s unit %s: %s", job_id, unit_id, exc)
            self._job_rows.pop(job_id, None)
            return "teacher-later"
        if result.state is None and result.error is None:
            owner = await in_db_thread(self.store.unit_job, unit_id)
            if owner is not None and owner != job_id:
                dead_letter(f"unit {unit_id} belongs to job {owner}, not to job {job_id}",
                            {"job_id": job_id, "unit_id": unit_id})
                return "refused"
        if job.status == JobState.BLOCKED and result.state is not None:
            await in_db_thread(self.store.set_job_status, job_id, JobState.ACTIVE)
            self._job_rows.pop(job_id, None)
        return result.state or "skipped"

    async def _job_run(self, job_id: str, spec_json: dict) -> JobRun:
        async with self._job_lock:
            cached = self.runs.get(job_id)
            if cached is not None and cached[0] == spec_json:
                return cached[1]
            spec = JobSpec.from_json(spec_json)
            instructor = load_instructor(spec, database_url=self.settings.database_url)
            spec.check_keys()
            budget = None
            if spec.run.budget_usd is not None:  # fleet-wide, seeded from what the database says was spent
                spent = await in_db_thread(self.store.job_cost, job_id)
                budget = RedisBudget(self.redis, job_id, spec.run.budget_usd, already_spent=spent)
            run = JobRun(self.store, job_id, spec, instructor, leases=self.leases, limiter_factory=self._limiter,
                         budget=budget)
            self.runs[job_id] = (spec_json, run)
            if cached is not None:
                await cached[1].close()
            return run

    def _limiter(self, t: TeacherSpec) -> RedisRateLimiter:
        scope = limiter_scope(t.provider, t.endpoint, t.model, t.key_env)
        return RedisRateLimiter(self.redis, scope, rpm=t.rpm, tpm=t.tpm, max_concurrency=t.max_concurrency)

    async def _supervise(self) -> None:
        """Every sweep period, the worker holding the supervisor lock heals the fleet (gen.core.fleet)."""
        supervisor = Supervisor(self.store, self.dispatcher, stall_seconds=self.settings.stall_seconds)
        every = self.settings.sweep_seconds
        while True:
            await asyncio.sleep(every)
            try:
                if await asyncio.to_thread(self.dispatcher.supervisor_lock, self.settings.worker_name, every * 3):
                    await asyncio.to_thread(supervisor.sweep)
            except Exception as exc:
                log.warning("supervisor pass failed (%s: %s); trying again in %.0fs", type(exc).__name__, exc, every)

    async def _advance_targets(self) -> None:
        """Target mode: the worker holding the supervisor lock plans each job's next wave as soon as the one before
        is settled (checked every second, or every sweep period if shorter), and dispatches it (gen.core.fleet)."""
        supervisor = Supervisor(self.store, self.dispatcher, stall_seconds=self.settings.stall_seconds)
        every = min(TARGET_TICK_SECONDS, self.settings.sweep_seconds)
        while True:
            await asyncio.sleep(every)
            try:
                if await asyncio.to_thread(self.dispatcher.supervisor_lock, self.settings.worker_name,
                                           self.settings.sweep_seconds * 3):
                    await asyncio.to_thread(supervisor.advance_targets)
            except Exception as exc:
                log.warning("target-mode planning failed (%s: %s); trying again in %.0fs", type(exc).__name__, exc,
                            every)


_runtime: WorkerRuntime | None = None
_runtime_lock = threading.Lock()


def get_runtime(app) -> WorkerRuntime:  # noqa: ANN001
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            try:
                _runtime = WorkerRuntime(fleet_settings(), app)
            finally:
                # The worker's start-up is over (`gen worker` paused the collector, gen.collector): its heap is
                # frozen, so the full collections of a long job no longer walk it (0.4 s each on a busy machine,
                # the loop stopped meanwhile: bench/rate.py --only fleet).
                collector.resume()
        return _runtime
