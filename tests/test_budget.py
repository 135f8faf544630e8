"""Budget by reservation: every call reserves its estimated cost first, so concurrency cannot overshoot the cap.

`gen run` for real against the simulator (prices set), and `RedisBudget` on a redis-server of the test's own
shared by several TeacherClients, each on its own event loop in its own thread, as several workers would.
"""
from __future__ import annotations

import asyncio
import threading

import pytest
import redis.asyncio as aioredis

from conftest import gen_cmd, sim_job, write_job
from fleet_helpers import RedisServer
from gen.budget import LocalBudget, RedisBudget
from gen.config import Prices, TeacherSpec
from gen.errors import BudgetExhausted
from gen.providers import make_provider
from gen.ratelimit import LocalRateLimiter
from gen.simulator import SimConfig, Simulator
from gen.store import Store, UnitState
from gen.teacher import TeacherClient, UnitTeacher
from test_teacher import MemoryJournal

PRICES = "    prices: {input_per_million: 10, output_per_million: 10}\n"


def test_two_hundred_units_at_once_stay_within_the_budget_in_gen_run(tmp_path):
    budget = 0.05
    with Simulator(SimConfig(latency=0.2, seed=51)) as sim:
        job = write_job(tmp_path / "j.yml", sim_job(
            sim.base_url, name="tiny", prompts=200, concurrency=200,
            extra_teacher="    max_tokens: 300\n" + PRICES, run=f"run:\n  budget_usd: {budget}\n"))
        result = gen_cmd("run", str(job), "-q")
        requests = sim.stats()["requests"]
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "budget reached" in result.stderr, result.stderr
    store = Store(f"sqlite:///{tmp_path / 'gen.db'}")
    job_id = store.find_job("tiny").id
    spent = store.job_cost(job_id)
    stats = store.stats(job_id)
    assert spent <= 1.1 * budget, (spent, last)
    assert spent >= 0.5 * budget  # the budget is used, not abandoned at the first unit that did not fit
    assert len(store.calls_for_job(job_id)) == requests  # every call made is on the record and counted
    assert 0 < stats.units[UnitState.DONE] < 200
    assert stats.units[UnitState.PENDING] == 200 - stats.units[UnitState.DONE]  # the rest wait for more budget
    assert stats.units.get(UnitState.FAILED, 0) == 0
    assert store.get_job(job_id).status == "stopped"


def test_a_local_budget_waits_for_calls_in_flight_then_refuses():
    async def main():
        budget = LocalBudget(1.0, already_spent=0.2)
        first = await budget.reserve(0.5)
        # 0.2 spent + 0.5 held + 0.5 > 1.0: waits while a call is in flight, and goes once it settled cheaper.
        waiting = asyncio.create_task(budget.reserve(0.5))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await budget.settle(first, 0.1)
        second = await asyncio.wait_for(waiting, 1)
        assert await budget.totals() == (pytest.approx(0.3), pytest.approx(0.5))
        await budget.settle(second, 0.5)
        with pytest.raises(BudgetExhausted) as refused:  # 0.8 spent, nothing in flight: 0.3 cannot fit
            await budget.reserve(0.3)
        return str(refused.value)

    message = asyncio.run(main())
    assert message.startswith("budget reached: $0.8000") and "\n" not in message


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def test_a_redis_budget_shared_by_several_workers_holds_the_cap(redis_server):
    cap, workers, units = 0.05, 3, 40
    with Simulator(SimConfig(latency=0.1, seed=52)) as sim:
        spec = TeacherSpec(name="main", provider="openai-compatible", model="sim-1", base_url=sim.base_url,
                           max_tokens=300, max_concurrency=64, timeout=10.0, prices=Prices(10, 10))
        results: dict[int, tuple[list, int]] = {}

        def worker(n: int) -> None:
            async def main():
                redis = aioredis.Redis.from_url(redis_server.url)
                budget = RedisBudget(redis, "job-1", cap)
                teacher = TeacherClient(spec, make_provider(spec), LocalRateLimiter(max_concurrency=64),
                                        budget=budget)
                journals = [MemoryJournal() for _ in range(units)]

                async def unit(i: int, journal: MemoryJournal):
                    try:
                        await UnitTeacher(teacher, journal).chat([{"role": "user", "content": f"Q{n}-{i}?"}])
                        return "done"
                    except BudgetExhausted:
                        return "stopped"

                try:
                    outcomes = await asyncio.gather(*(unit(i, j) for i, j in enumerate(journals)))
                finally:
                    await teacher.aclose()
                    await redis.aclose()
                return [o for j in journals for o in j.outcomes], outcomes.count("stopped")

            results[n] = asyncio.run(main())

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(100)
        requests = sim.stats()["requests"]
    calls = [o for outcomes, _ in results.values() for o in outcomes]
    stopped = sum(s for _, s in results.values())
    spent = sum(o.cost_usd for o in calls)
    assert len(results) == workers and len(calls) == requests
    assert spent <= 1.1 * cap and spent >= 0.5 * cap, spent
    assert stopped > 0 and stopped + sum(1 for o in calls if o.accepted) == workers * units
    counted = float(redis_server.client().hget("gen:budget:job-1", "spent"))
    assert counted == pytest.approx(spent, rel=1e-6)


def test_a_redis_budget_is_seeded_from_the_database_and_expires_lost_reservations(redis_server):
    async def main():
        redis = aioredis.Redis.from_url(redis_server.url)
        try:
            # A worker opening a job the database says already spent $0.95 of $1: $0.10 cannot start.
            opened = RedisBudget(redis, "job-2", 1.0, already_spent=0.95)
            with pytest.raises(BudgetExhausted):
                await opened.reserve(0.10)
            small = await opened.reserve(0.04)
            await opened.settle(small, 0.04)
            assert (await opened.totals())[0] == pytest.approx(0.99)
            # A worker killed while holding a reservation: after its lifetime it counts as spent (it may have
            # been billed), so the fleet neither waits for it forever nor spends it twice.
            lost = RedisBudget(redis, "job-3", 1.0, reservation_seconds=0.2)
            await lost.reserve(0.6)
            other = RedisBudget(redis, "job-3", 1.0, reservation_seconds=0.2, poll=0.05)
            with pytest.raises(BudgetExhausted) as refused:
                await asyncio.wait_for(other.reserve(0.5), 5)
            assert "$0.6000 spent" in str(refused.value)
        finally:
            await redis.aclose()

    asyncio.run(main())
