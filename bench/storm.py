"""A 429 storm: a provider really allowing 60 RPM (at a one-second grain) under a job stating 1,200 RPM.

Runs the same units twice in one process against the teacher simulator (real HTTP, the real openai SDK):
first at the stated pace only (the pace does not adapt: what gen did before), then with adaptive pacing
(`x-ratelimit-limit-*` headers and AIMD on 429s). Prints refused requests per answer and wall time for each.
With `--redis URL`, the adaptive run is also made fleet-style: `--workers` TeacherClients, each on its own event
loop and thread, sharing one RedisRateLimiter scope (use a Redis of your own: the bench writes keys under
`gen:rl:bench-storm-*`).

    python bench/storm.py --units 40
    python bench/storm.py --units 40 --redis redis://127.0.0.1:6379/15 --workers 3
"""
from __future__ import annotations

import argparse
import asyncio
import threading
import time
import uuid

from gen.config import TeacherSpec
from gen.providers import make_provider
from gen.ratelimit import LocalRateLimiter
from gen.simulator import SimConfig, Simulator
from gen.teacher import CallOutcome, StoredReply, TeacherClient, UnitTeacher


class NullJournal:
    """Keeps nothing: the bench counts from the simulator's side."""

    async def record_call(self, outcome: CallOutcome) -> int:
        return 0

    def accepted_reply(self, request_key: str, occurrence: int) -> StoredReply | None:
        return None


def units_on_one_loop(spec: TeacherSpec, make_limiter, questions: list[str]) -> int:
    async def main() -> int:
        limiter = make_limiter()
        teacher = TeacherClient(spec, make_provider(spec), limiter)
        try:
            replies = await asyncio.gather(*(UnitTeacher(teacher, NullJournal()).chat(
                [{"role": "user", "content": q}]) for q in questions), return_exceptions=True)
        finally:
            await teacher.aclose()
            if getattr(limiter, "redis", None) is not None:
                await limiter.redis.aclose()
        return sum(1 for r in replies if not isinstance(r, BaseException))

    return asyncio.run(main())


def storm(label: str, args, factories: list) -> None:
    with Simulator(SimConfig(latency=args.latency, rpm=args.real_rpm, seed=9)) as sim:
        spec = TeacherSpec(name="main", provider="openai-compatible", model="sim-1", base_url=sim.base_url,
                           rpm=args.stated_rpm, max_concurrency=args.concurrency, timeout=30.0, max_tokens=400)
        share = args.units // len(factories)
        done: list[int] = []
        started = time.monotonic()
        threads = [threading.Thread(target=lambda n=n, f=f: done.append(units_on_one_loop(
            spec, f, [f"Question {n}-{i}: what is {i} plus {n}?" for i in range(share)])))
            for n, f in enumerate(factories)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.monotonic() - started
        stats = sim.stats()
    answered = stats["by_status"].get("200", 0)
    refused = stats["served_429"]
    print(f"{label:<34} units {sum(done):>3}/{share * len(factories):<3} answers {answered:>3}  refused {refused:>5}"
          f"  refused/answer {refused / max(answered, 1):6.2f}  wall {wall:6.1f}s  "
          f"(ideal at {args.real_rpm:g} RPM: {60.0 * answered / args.real_rpm:5.1f}s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=40)
    parser.add_argument("--stated-rpm", type=float, default=1200)
    parser.add_argument("--real-rpm", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.01)
    parser.add_argument("--redis", default=None, help="also run the adaptive pace fleet-style on this Redis")
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()

    def local(adaptive: bool):
        return lambda: LocalRateLimiter(rpm=args.stated_rpm, max_concurrency=args.concurrency, adaptive=adaptive)

    print(f"real limit {args.real_rpm} RPM at a 1 s grain, stated {args.stated_rpm:g} RPM, {args.units} units, "
          f"{args.concurrency} in flight per process")
    storm("gen run, stated pace (before)", args, [local(False)])
    storm("gen run, adaptive pace", args, [local(True)])
    if args.redis:
        import redis.asyncio as aioredis

        from gen.ratelimit.redis_limiter import RedisRateLimiter

        def fleet(adaptive: bool, scope: str):
            return lambda: RedisRateLimiter(aioredis.Redis.from_url(args.redis), scope, rpm=args.stated_rpm,
                                            max_concurrency=args.concurrency, adaptive=adaptive)

        for adaptive, label in ((False, "stated pace (before)"), (True, "adaptive pace")):
            scope = f"bench-storm-{uuid.uuid4().hex[:8]}"
            storm(f"fleet x{args.workers}, {label}", args, [fleet(adaptive, scope) for _ in range(args.workers)])


if __name__ == "__main__":
    main()
