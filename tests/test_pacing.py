"""Pacing: an absolute timeline without drift, and a pace that adapts to what the provider really allows.

The provider is the simulator (real HTTP on loopback, the real openai SDK): a real limit of 60 RPM enforced at
a one-second grain, announced in `x-ratelimit-limit-*` headers, under a job that states 1,200 RPM.
Fleet-style tests share a redis-server of their own between several TeacherClients, each on its own event
loop in its own thread, as several workers would.
"""
from __future__ import annotations

import asyncio
import random
import threading

import pytest
import redis.asyncio as aioredis

from gen.config import TeacherSpec
from gen.providers import make_provider
from gen.ratelimit import LocalRateLimiter
from gen.ratelimit.base import HeaderHint
from gen.ratelimit.pace import CATCH_UP_SECONDS, DECREASE, HEADROOM, RECOVERY_SECONDS, Pace
from gen.ratelimit.redis_limiter import RedisRateLimiter
from gen.simulator import SimConfig, Simulator
from gen.simulator.buckets import TokenBucket
from gen.teacher import TeacherClient, UnitTeacher
from fleet_helpers import RedisServer
from test_teacher import MemoryJournal

STATED_RPM = 1200
REAL_RPM = 60


class FakeClock:
    """Time that moves only when a caller sleeps, and always wakes it a little late (a busy event loop)."""

    def __init__(self, lateness=(0.0005, 0.0015), seed: int = 3):
        self.now = 1000.0
        self.lateness = lateness
        self.rng = random.Random(seed)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds) + self.rng.uniform(*self.lateness)
        await asyncio.sleep(0)


def spec_for(sim: Simulator, **overrides) -> TeacherSpec:
    settings = dict(name="main", provider="openai-compatible", model="sim-1", base_url=sim.base_url,
                    rpm=STATED_RPM, max_concurrency=16, timeout=10.0, max_tokens=400)
    settings.update(overrides)
    return TeacherSpec(**settings)


def question(i: int) -> list:
    return [{"role": "user", "content": f"Question {i}: what is {i} plus {i}?"}]


# ------------------------------------------------------------------------------------- pacing without drift
def test_a_thousand_acquisitions_have_no_cumulative_drift():
    # Every wake-up is 0.5-1.5 ms late (as measured at 1,200 RPM: starts 50.9-51.1 ms apart instead of 50.0).
    clock = FakeClock()
    interval = 60.0 / STATED_RPM

    async def main():
        limiter = LocalRateLimiter(rpm=STATED_RPM, max_concurrency=50, clock=clock, sleep=clock.sleep)
        starts: list[float] = []

        async def caller(n: int):
            for _ in range(n):
                permit = await limiter.acquire(10)
                starts.append(permit.granted_at)
                await limiter.release(permit, 10)

        await asyncio.gather(*(caller(20) for _ in range(50)))
        return starts

    starts = sorted(asyncio.run(main()))
    assert len(starts) == 1000
    t0 = starts[0]
    # Slot k is at t0 + k*interval: the last start is where the timeline says, within one wake-up's lateness.
    assert abs(starts[-1] - (t0 + 999 * interval)) < 0.002, starts[-1] - t0
    for i, first in enumerate(starts):
        assert first >= t0 + i * interval - 1e-9  # never ahead of its slot
        within = [s for s in starts[i:] if s < first + 1.0]
        if first + 1.0 <= starts[-1]:  # any whole one-second window: no closer than the interval on average
            assert (within[-1] - first) / (len(within) - 1) >= interval * 0.995
        assert len(within) <= round(1.0 / interval) + 1


def test_an_idle_limiter_starts_at_once_and_a_lost_slot_is_not_made_up():
    clock = FakeClock(lateness=(0.0, 0.0))

    async def main():
        limiter = LocalRateLimiter(rpm=600, clock=clock, sleep=clock.sleep)
        first = await limiter.acquire(1)
        await limiter.release(first, 1)
        clock.now += 5.0  # idle for a while
        second = await limiter.acquire(1)
        await limiter.release(second, 1)
        third = await limiter.acquire(1)
        return first.granted_at, second.granted_at, third.granted_at

    first, second, third = asyncio.run(main())
    assert second == first + 5.0          # the timeline was re-based: no wait after idling
    assert third == pytest.approx(second + 0.1)  # and no burst to make up the idle time


class StallingClock(FakeClock):
    """A fake clock whose event loop blocks once: the sleep that crosses `at` wakes `stall` seconds late."""

    def __init__(self, at: float, stall: float):
        super().__init__(lateness=(0.0, 0.0))
        self.at, self.stall = self.now + at, stall

    async def sleep(self, seconds: float) -> None:
        before = self.now
        await super().sleep(seconds)
        if before < self.at <= self.now:
            self.now += self.stall


def paced_starts(clock: FakeClock, calls: int, *, rpm: float = STATED_RPM) -> list[float]:
    async def main():
        limiter = LocalRateLimiter(rpm=rpm, max_concurrency=calls, clock=clock, sleep=clock.sleep)
        starts: list[float] = []

        async def call():
            permit = await limiter.acquire(10)
            starts.append(permit.granted_at)
            await limiter.release(permit, 10)

        await asyncio.gather(*(call() for _ in range(calls)))
        return sorted(starts)

    return asyncio.run(main())


def admitted_at_a_one_second_grain(starts: list[float]) -> bool:
    """Would the simulator's limit (STATED_RPM in one-second buckets, without its timing tolerance) admit all?"""
    bucket = TokenBucket(STATED_RPM, starts[0])
    for start in starts:
        bucket.refill(start)
        if bucket.level < 1.0 - 1e-9:
            return False
        bucket.take(1.0)
    return True


def test_slots_missed_while_callers_waited_are_made_up_for_a_quarter_of_a_second_at_most():
    interval = 60.0 / STATED_RPM
    # The event loop blocks for 0.2 s a second into the run: the four slots missed are made up back to back, so
    # 200 calls still take 199 intervals, and the burst is those slots only.
    starts = paced_starts(StallingClock(at=1.0, stall=0.2), 200)
    assert starts[-1] - starts[0] == pytest.approx(199 * interval, abs=1e-6)
    assert max(sum(1 for s in starts if s == a) for a in starts) <= 0.2 / interval + 1
    assert admitted_at_a_one_second_grain(starts)
    # Blocked for 2 s: a quarter of a second is made up (five calls at once), the rest is lost, not burst.
    starts = paced_starts(StallingClock(at=1.0, stall=2.0), 200)
    assert starts[-1] - starts[0] == pytest.approx(199 * interval + 2.0 - CATCH_UP_SECONDS, abs=1e-6)
    assert max(sum(1 for s in starts if s == a) for a in starts) == CATCH_UP_SECONDS / interval + 1
    assert admitted_at_a_one_second_grain(starts)


# ------------------------------------------------------------------------------------------ the pace rules
def test_the_pace_halves_on_a_429_once_per_round_and_recovers_slowly():
    pace = Pace.stated(STATED_RPM, None)
    t = 0.0
    assert pace.requests.rate(t) == STATED_RPM
    assert pace.refused(granted_at=t, now=t + 0.01)
    assert pace.requests.rate(t + 0.01) == pytest.approx(STATED_RPM * DECREASE)
    # A 429 for a call sent before that decrease says nothing new: the pace is not halved again.
    assert not pace.refused(granted_at=t + 0.005, now=t + 0.02)
    assert pace.requests.rate(t + 0.02) == pytest.approx(STATED_RPM * DECREASE, rel=1e-3)
    # A call sent at the lowered pace and refused again: halved again.
    assert pace.refused(granted_at=t + 0.5, now=t + 0.51)
    low = pace.requests.rate(t + 0.51)
    assert low == pytest.approx(STATED_RPM * DECREASE * DECREASE, rel=1e-2)
    # Additive recovery toward the stated limit over minutes, never past it.
    later = t + 0.51 + RECOVERY_SECONDS / 10
    assert pace.requests.rate(later) == pytest.approx(low + STATED_RPM / 10, rel=1e-3)
    assert pace.requests.rate(t + 2 * RECOVERY_SECONDS) == STATED_RPM


def test_an_announced_limit_sets_the_ceiling_and_a_raised_one_is_climbed_to_slowly():
    pace = Pace.stated(STATED_RPM, 1_000_000)
    assert pace.announce(REAL_RPM, 20_000, now=0.0)
    assert pace.requests.rate(0.0) == pytest.approx(REAL_RPM * HEADROOM)
    assert pace.tokens.rate(0.0) == pytest.approx(20_000 * HEADROOM)
    assert not pace.announce(REAL_RPM, 20_000, now=1.0)  # nothing new
    assert not pace.announce(600, None, now=2.0)  # raised: not lowered, and not at once either
    assert pace.requests.rate(2.0) == pytest.approx(REAL_RPM * HEADROOM)
    assert REAL_RPM * HEADROOM < pace.requests.rate(62.0) < 600 * HEADROOM
    # Stated limits below the announced ones still rule.
    assert Pace.stated(30, None).announce(REAL_RPM, None, now=0.0) is False


def test_an_announced_limit_that_confirms_the_stated_one_leaves_the_pace_whole():
    pace = Pace.stated(STATED_RPM, 2_000_000)
    assert not pace.announce(STATED_RPM, 2_000_000, now=0.0)  # the provider says what the job says
    assert pace.requests.rate(0.0) == STATED_RPM and pace.tokens.rate(0.0) == 2_000_000
    assert not pace.announce(STATED_RPM * 2, None, now=1.0)  # it allows more: the stated pace still rules
    assert pace.requests.rate(1.0) == STATED_RPM
    assert pace.announce(STATED_RPM - 1, None, now=2.0)  # below the stated one: headroom under it, at once
    assert pace.requests.rate(2.0) == pytest.approx((STATED_RPM - 1) * HEADROOM)


def test_with_no_429_the_pacer_issues_calls_at_the_stated_rpm_from_the_first_second():
    # The provider announces exactly the stated limit on every answer (as the simulator and OpenAI do): six
    # hundred calls must go out at 1,200 RPM, 20 in each second from the first, not at 95% of it.
    clock = FakeClock()
    interval = 60.0 / STATED_RPM
    confirming = HeaderHint(remaining_requests=19, limit_requests=STATED_RPM, reset_requests=0.05)

    async def main():
        limiter = LocalRateLimiter(rpm=STATED_RPM, max_concurrency=200, clock=clock, sleep=clock.sleep)
        starts: list[float] = []

        async def call():
            permit = await limiter.acquire(10)
            starts.append(permit.granted_at)
            await limiter.observe(confirming, 10)  # its answer's headers
            await limiter.release(permit, 10)

        await asyncio.gather(*(call() for _ in range(600)))
        return starts, await limiter.current_rpm()

    starts, rpm = asyncio.run(main())
    assert rpm == STATED_RPM
    t0 = starts[0]
    assert sum(1 for s in starts if s < t0 + 1.0) == 20
    assert starts[-1] - t0 == pytest.approx(599 * interval, abs=0.002)


def test_a_stated_pace_does_not_adapt():
    pace = Pace.stated(STATED_RPM, None, adaptive=False)
    assert not pace.announce(REAL_RPM, None, now=0.0) and not pace.refused(0.0, 0.1)
    assert pace.requests.rate(1.0) == STATED_RPM


# --------------------------------------------------------------------------------- against the simulator
def run_units(spec: TeacherSpec, limiter_factory, count: int, first: int = 0):
    """`count` units on one event loop, each asking one question; returns (replies, journals, teacher)."""
    async def main():
        limiter = limiter_factory()
        teacher = TeacherClient(spec, make_provider(spec), limiter)
        journals = [MemoryJournal() for _ in range(count)]
        try:
            replies = await asyncio.gather(*(UnitTeacher(teacher, j).chat(question(first + i))
                                             for i, j in enumerate(journals)))
            return replies, journals, teacher
        finally:
            await teacher.aclose()
            if isinstance(limiter, RedisRateLimiter):
                await limiter.redis.aclose()

    return asyncio.run(main())


def test_announced_limits_alone_lower_the_pace_before_any_429():
    with Simulator(SimConfig(latency=0.01, rpm=REAL_RPM, seed=41)) as sim:
        spec = spec_for(sim)

        async def main():
            limiter = LocalRateLimiter(rpm=STATED_RPM, max_concurrency=spec.max_concurrency)
            teacher = TeacherClient(spec, make_provider(spec), limiter)
            try:
                await UnitTeacher(teacher, MemoryJournal()).chat(question(0))  # one answer, with its headers
                learnt = await limiter.current_rpm()
                journals = [MemoryJournal() for _ in range(5)]
                await asyncio.gather(*(UnitTeacher(teacher, j).chat(question(i + 1)) for i, j in enumerate(journals)))
                return learnt, journals
            finally:
                await teacher.aclose()

        learnt, journals = asyncio.run(main())
        stats = sim.stats()
    assert learnt == pytest.approx(REAL_RPM * HEADROOM)
    # Six calls at what the provider announced: the provider never had to refuse one.
    assert stats["served_429"] == 0 and stats["by_status"] == {"200": 6}
    assert all(j.kinds() == [None] for j in journals)


def test_a_429_storm_in_gen_run_costs_at_most_half_a_refusal_per_answer():
    # Answers take 0.3 s: at the stated pace, six calls are out before the first answer's headers are read.
    with Simulator(SimConfig(latency=0.3, rpm=REAL_RPM, seed=42)) as sim:
        spec = spec_for(sim)
        replies, journals, teacher = run_units(
            spec, lambda: LocalRateLimiter(rpm=STATED_RPM, max_concurrency=spec.max_concurrency), 40)
        stats = sim.stats()
    assert len(replies) == 40 and all(r.text for r in replies)  # every unit done; none failed for 429s
    answered = stats["by_status"]["200"]
    assert answered == 40
    assert stats["served_429"] / answered <= 0.5, stats
    assert teacher.meter.rate_limited == stats["served_429"]


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def fleet_limiter(url: str, spec: TeacherSpec):
    def make():
        return RedisRateLimiter(aioredis.Redis.from_url(url), "storm-scope", rpm=spec.rpm,
                                max_concurrency=spec.max_concurrency)
    return make


def test_a_429_storm_across_a_fleet_costs_at_most_half_a_refusal_per_answer(redis_server):
    workers, per_worker = 3, 10
    with Simulator(SimConfig(latency=0.3, rpm=REAL_RPM, seed=43)) as sim:
        spec = spec_for(sim)
        results: dict[int, tuple] = {}
        errors: list[BaseException] = []

        def worker(n: int):
            try:
                results[n] = run_units(spec, fleet_limiter(redis_server.url, spec), per_worker,
                                       first=n * per_worker)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(100)
        stats = sim.stats()
    assert not errors, errors
    replies = [r for replies, _, _ in results.values() for r in replies]
    assert len(replies) == workers * per_worker and all(r.text for r in replies)
    answered = stats["by_status"]["200"]
    assert answered == workers * per_worker
    assert stats["served_429"] / answered <= 0.5, stats


def test_what_one_worker_learns_paces_the_whole_fleet(redis_server):
    with Simulator(SimConfig(latency=0.01, rpm=REAL_RPM, seed=44)) as sim:
        spec = spec_for(sim)

        async def main():
            first = fleet_limiter(redis_server.url, spec)()
            second = fleet_limiter(redis_server.url, spec)()  # another worker: it never called the provider
            before = await second.current_rpm()
            teacher = TeacherClient(spec, make_provider(spec), first)
            try:
                await UnitTeacher(teacher, MemoryJournal()).chat(question(0))
                return before, await second.current_rpm()
            finally:
                await teacher.aclose()
                await first.redis.aclose()
                await second.redis.aclose()

        before, after = asyncio.run(main())
    assert before == STATED_RPM
    assert after == pytest.approx(REAL_RPM * HEADROOM, rel=1e-4)


def test_a_fleet_keeps_the_stated_pace_when_the_provider_confirms_it(redis_server):
    with Simulator(SimConfig(latency=0.01, rpm=STATED_RPM, seed=45)) as sim:
        spec = spec_for(sim)

        async def main():
            limiter = fleet_limiter(redis_server.url, spec)()
            teacher = TeacherClient(spec, make_provider(spec), limiter)
            try:
                await asyncio.gather(*(UnitTeacher(teacher, MemoryJournal()).chat(question(i)) for i in range(5)))
                return await limiter.current_rpm()
            finally:
                await teacher.aclose()
                await limiter.redis.aclose()

        rpm = asyncio.run(main())
        stats = sim.stats()
    assert stats["by_status"] == {"200": 5}  # answers carrying x-ratelimit-limit-requests: 1200
    assert rpm == pytest.approx(STATED_RPM)


# ------------------------------------------------------------------------------------ what a user waits for
def test_gen_run_exits_without_the_interpreters_final_garbage_collections(tmp_path):
    # With the SDKs, pydantic and SQLAlchemy loaded, the collections at interpreter exit took 0.5-1.4 s after
    # the last line (bench/rate.py's tail). `gen run` freezes the heap at exit instead: this hook, registered
    # first, runs last and sees it frozen.
    import subprocess
    import sys

    from conftest import ROOT, sim_job

    with Simulator(SimConfig(latency=0.01)) as sim:
        (tmp_path / "job.yml").write_text(sim_job(sim.base_url, prompts=3))
        db_url, job = f"sqlite:///{tmp_path / 'gen.db'}", str(tmp_path / "job.yml")
        script = ("import atexit, gc, sys\n"
                  "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0, flush=True))\n"
                  "from gen.core.run_command import run_job_file\n"
                  f"sys.exit(run_job_file({db_url!r}, {job!r}, quiet=True))\n")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                              cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "frozen at exit: True" in done.stdout


def test_the_simulator_keeps_the_arrival_time_of_every_chat_request():
    import json
    import time
    import urllib.request

    with Simulator(SimConfig(latency=0.01, rpm=60)) as sim:  # one second's worth: a burst of 2 gets 1 refused
        spec = spec_for(sim, rpm=None, max_concurrency=2)
        before = time.time()
        run_units(spec, lambda: LocalRateLimiter(max_concurrency=2), 1)
        root = sim.base_url.rsplit("/v1", 1)[0]
        request = urllib.request.Request(root + "/v1/chat/completions", data=json.dumps(
            {"model": "sim-1", "messages": question(9)}).encode(), headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request)
        except urllib.error.HTTPError as exc:
            assert exc.code == 429
        seen = json.load(urllib.request.urlopen(root + "/sim/arrivals"))
    assert seen["clock"] == "unix"
    (first, ok_first), (second, ok_second) = seen["arrivals"]
    assert before <= first <= second <= time.time() and ok_first is True and ok_second is False

