"""Building a job's teachers: provider adapter + limiter + retry policy, once per job per process."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlsplit

from gen.budget import Budget
from gen.config import JobSpec, RetryPolicy, TeacherSpec
from gen.errors import TeacherUnavailable
from gen.providers import make_provider
from gen.ratelimit import LocalRateLimiter, RateLimiter
from gen.teacher import Meter, TeacherClient

LimiterFactory = Callable[[TeacherSpec], RateLimiter]


def local_limiter(spec: TeacherSpec) -> RateLimiter:
    return LocalRateLimiter(rpm=spec.rpm, tpm=spec.tpm, max_concurrency=spec.max_concurrency)


def build_teachers(job: JobSpec, *, meter: Meter, limiter_factory: LimiterFactory = local_limiter,
                   budget: Budget | None = None) -> dict[str, TeacherClient]:
    """One TeacherClient per name in the job file, all drawing from the job's `budget` (if any).
    Raises MissingKeyError before anything is sent."""
    job.check_keys()
    return {name: TeacherClient(spec, make_provider(spec), limiter_for(spec, limiter_factory), meter,
                                policy=RetryPolicy.of(spec, job.run), budget=budget)
            for name, spec in job.teachers.items()}


def limiter_for(spec: TeacherSpec, limiter_factory: LimiterFactory) -> RateLimiter:
    """The teacher's limiter. `rpm`/`tpm` are online limits: a batch API has its own (requests and tokens
    enqueued), and a batch-mode request waits in the database, not on the wire, so in batch mode only how many
    requests are open at once is bounded (`TeacherSpec.calls_at_once`), in each process."""
    if spec.mode == "batch":
        return LocalRateLimiter(rpm=None, tpm=None, max_concurrency=spec.calls_at_once)
    return limiter_factory(spec)


async def close_teachers(teachers: dict[str, TeacherClient]) -> None:
    for teacher in teachers.values():
        try:
            await teacher.aclose()
        except Exception:
            pass


async def check_reachable(job: JobSpec, timeout: float = 5.0) -> None:
    """Open a TCP connection to each teacher's host, so an unreachable teacher fails before any work starts."""
    seen: set[tuple[str, int]] = set()
    for spec in job.teachers.values():
        parts = urlsplit(spec.endpoint)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if (host, port) in seen:
            continue
        seen.add((host, port))
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            writer.close()
        except (OSError, asyncio.TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else (exc.strerror or type(exc).__name__)
            raise TeacherUnavailable(f"teacher '{spec.name}' is unreachable at {spec.endpoint} ({reason})") from None
