"""Budget overshoot: many units started at once under a small `budget_usd`, against the teacher simulator.

The same units (one call each, prices set, every unit in flight at once) run twice in one process:
first with the budget only checked before a unit starts (what gen did before), then with every call reserving
its estimated cost from a `LocalBudget` (what `gen run` does now). With `--redis URL`, a third run shares a
`RedisBudget` between `--workers` TeacherClients on their own event loops (use a Redis of your own: keys go under
`gen:budget:bench-*`). Prints spent / budget for each.

    python bench/budget.py --units 200 --budget 0.05
    python bench/budget.py --units 200 --budget 0.05 --redis redis://127.0.0.1:6379/15
"""
from __future__ import annotations

import argparse
import asyncio
import threading
import time
import uuid

from gen.budget import LocalBudget, RedisBudget
from gen.config import Prices, TeacherSpec
from gen.errors import BudgetExhausted
from gen.providers import make_provider
from gen.ratelimit import LocalRateLimiter
from gen.simulator import SimConfig, Simulator
from gen.teacher import CallOutcome, StoredReply, TeacherClient, UnitTeacher


class CostJournal:
    """Adds up what the calls cost."""

    def __init__(self) -> None:
        self.cost = 0.0

    async def record_call(self, outcome: CallOutcome) -> int:
        if outcome.accepted is not False:
            self.cost += outcome.cost_usd
        return 0

    def accepted_reply(self, request_key: str, occurrence: int) -> StoredReply | None:
        return None


def units(spec: TeacherSpec, count: int, cap: float, make_budget) -> tuple[float, int]:
    """`count` units at once; returns (what they spent, how many were done)."""
    async def main():
        budget = make_budget()
        teacher = TeacherClient(spec, make_provider(spec), LocalRateLimiter(max_concurrency=count), budget=budget)
        journal = CostJournal()

        async def unit(i: int) -> bool:
            if budget is None and journal.cost >= cap:  # the old per-unit check
                return False
            try:
                await UnitTeacher(teacher, journal).chat([{"role": "user", "content": f"Question {i}?"}])
                return True
            except BudgetExhausted:
                return False

        try:
            done = await asyncio.gather(*(unit(i) for i in range(count)))
        finally:
            await teacher.aclose()
            if isinstance(budget, RedisBudget):
                await budget.redis.aclose()
        return journal.cost, sum(done)

    return asyncio.run(main())


def report(label: str, spent: float, done: int, cap: float, started: float) -> None:
    print(f"{label:<38} spent ${spent:.4f} of ${cap:.4f} = {spent / cap:5.2f}x budget, {done} units done, "
          f"{time.monotonic() - started:4.1f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=200)
    parser.add_argument("--budget", type=float, default=0.05)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--redis", default=None)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    with Simulator(SimConfig(latency=args.latency, seed=5)) as sim:
        spec = TeacherSpec(name="main", provider="openai-compatible", model="sim-1", base_url=sim.base_url,
                           max_tokens=300, max_concurrency=args.units, timeout=30.0, prices=Prices(10, 10))
        print(f"{args.units} units at once, budget ${args.budget}, $10 per million tokens in and out, "
              f"max_tokens 300, simulator latency {args.latency}s")
        started = time.monotonic()
        report("checked per unit only (before)", *units(spec, args.units, args.budget, lambda: None),
               args.budget, started)
        started = time.monotonic()
        report("reserved per call (gen run)", *units(spec, args.units, args.budget,
                                                     lambda: LocalBudget(args.budget)), args.budget, started)
        if args.redis:
            import redis.asyncio as aioredis

            job = f"bench-{uuid.uuid4().hex[:8]}"
            results: list[tuple[float, int]] = []
            share = args.units // args.workers

            def worker() -> None:
                results.append(units(spec, share, args.budget, lambda: RedisBudget(
                    aioredis.Redis.from_url(args.redis), job, args.budget)))

            started = time.monotonic()
            threads = [threading.Thread(target=worker) for _ in range(args.workers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            report(f"reserved per call (fleet x{args.workers}, Redis)", sum(r[0] for r in results),
                   sum(r[1] for r in results), args.budget, started)


if __name__ == "__main__":
    main()
