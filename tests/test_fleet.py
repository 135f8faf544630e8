"""The worker fleet for real: Celery workers as processes, on a redis-server and the machine's PostgreSQL."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from conftest import gen_cmd, sim_job, write_job
from fleet_helpers import RedisServer, Worker, calls_since, paid_after_kill
from gen.simulator import SimConfig, Simulator
from gen.store import Store, UnitState


@pytest.fixture
def fleet(tmp_path, pg_url):
    """Environment for workers and commands: the test's own Redis, a fresh PostgreSQL database, short leases."""
    redis_server = RedisServer(tmp_path)
    env = {"GEN_DATABASE_URL": pg_url, "GEN_REDIS_URL": redis_server.url, "GEN_LEASE_SECONDS": "3",
           "GEN_SWEEP_SECONDS": "1", "GEN_STALL_SECONDS": "2"}
    workers: list[Worker] = []

    class Fleet:
        redis = redis_server
        store = Store(pg_url)

        def __init__(self):
            self.env = env

        def start(self, n: int = 1, concurrency: int = 20) -> list[Worker]:
            new = [Worker(env, tmp_path / f"worker{len(workers) + i}.log", f"w{len(workers) + i}", concurrency)
                   for i in range(n)]
            workers.extend(new)
            return [w.wait_ready() for w in new]

        def start_with(self, extra: dict[str, str], concurrency: int = 20) -> Worker:
            """One worker with extra environment (a failpoint, say), started without waiting for it."""
            worker = Worker({**env, **extra}, tmp_path / f"worker{len(workers)}.log", f"w{len(workers)}", concurrency)
            workers.append(worker)
            return worker

        def gen(self, *args: str, **kwargs):
            return gen_cmd(*args, env=env, **kwargs)

        def enqueue(self, job_file) -> str:
            result = self.gen("enqueue", str(job_file))
            assert result.returncode == 0, result.stderr
            return result.stdout.strip()

        def wait_finished(self, job_id: str, timeout: float = 90) -> dict:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                units = self.store.stats(job_id).units
                if units[UnitState.PENDING] == units[UnitState.RUNNING] == 0:
                    return units
                time.sleep(0.2)
            raise AssertionError(f"job {job_id} did not finish: {self.store.stats(job_id)}\n"
                                 + "\n".join(w.text()[-3000:] for w in workers))

        def accepted_per_unit(self, job_id: str) -> dict[int, int]:
            with self.store.engine.connect() as conn:
                rows = conn.execute(text("SELECT unit_id, count(*) FROM calls WHERE job_id = :j AND accepted "
                                         "GROUP BY unit_id"), {"j": job_id}).all()
            return dict(rows)

    yield Fleet()
    for worker in workers:
        worker.stop()
    Fleet.store.close()
    redis_server.stop()


def test_two_workers_run_a_job_to_completion_each_unit_once(fleet, tmp_path):
    with Simulator(SimConfig(latency=0.05)) as sim:
        w1, w2 = fleet.start(2)
        job_id = fleet.enqueue(write_job(tmp_path / "j.yml", sim_job(sim.base_url, prompts=40)))
        units = fleet.wait_finished(job_id)
    assert units[UnitState.DONE] == 40
    stats = fleet.store.stats(job_id)
    assert stats.records == 40 and stats.duplicates == 0
    assert set(fleet.accepted_per_unit(job_id).values()) == {1}
    workers = {u.worker for u in fleet.store.units(job_id)}
    assert workers == {"w0", "w1"}, "both worker processes took units"
    status = fleet.gen("status", job_id)
    assert "40/40 finished" in status.stdout and "finished" in status.stdout.splitlines()[0]


def test_a_worker_killed_mid_conversation_loses_nothing_and_repeats_no_call(fleet, tmp_path):
    follow_ups = "  follow_ups: [\"Tell me more.\", \"Give an example.\", \"Summarise.\"]\n"
    with Simulator(SimConfig(latency=0.6)) as sim:
        victim, = fleet.start(1)
        text_ = sim_job(sim.base_url, prompts=6).replace("  prompts:\n", follow_ups + "  prompts:\n")
        job_id = fleet.enqueue(write_job(tmp_path / "j.yml", text_))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # kill once units are part-way through their 4 calls
            with fleet.store.engine.connect() as conn:
                accepted = conn.execute(text("SELECT count(*) FROM calls WHERE job_id = :j AND accepted"),
                                        {"j": job_id}).scalar()
            if accepted >= 8:
                break
            time.sleep(0.05)
        victim.kill()
        paid_at_kill = paid_after_kill(sim)
        with fleet.store.engine.connect() as conn:
            accepted_before = conn.execute(text("SELECT id FROM calls WHERE job_id = :j AND accepted"),
                                           {"j": job_id}).scalars().all()
            last_at_kill = conn.execute(text("SELECT coalesce(max(id), 0) FROM calls WHERE job_id = :j"),
                                        {"j": job_id}).scalar()
        assert fleet.store.stats(job_id).units[UnitState.DONE] < 6, "the kill must land mid-job"
        fleet.start(1)
        units = fleet.wait_finished(job_id)
        paid_total = sim.stats()["by_status"].get("200", 0)
    assert units[UnitState.DONE] == 6
    stats = fleet.store.stats(job_id)
    assert stats.records == 6 and stats.duplicates == 0
    assert set(fleet.accepted_per_unit(job_id).values()) == {4}, "each turn accepted exactly once"
    with fleet.store.engine.connect() as conn:
        still = conn.execute(text("SELECT count(*) FROM calls WHERE job_id = :j AND accepted AND id = ANY(:ids)"),
                             {"j": job_id, "ids": list(accepted_before)}).scalar()
    assert still == len(accepted_before), "the turns answered before the kill were reused"
    # Everything paid for after the kill is recorded, and none of it asked again a turn accepted before it.
    answered, repeated = calls_since(fleet.store, job_id, last_at_kill, accepted_before)
    assert paid_total - paid_at_kill == answered and repeated == 0
    for record in fleet.store.iter_records(job_id):
        assert [m["role"] for m in record.conversation] == ["user", "assistant"] * 4


def test_redis_flushed_mid_job_heals_itself_with_no_manual_step(fleet, tmp_path):
    with Simulator(SimConfig(latency=0.2)) as sim:
        fleet.start(1, concurrency=4)
        job_id = fleet.enqueue(write_job(tmp_path / "j.yml", sim_job(sim.base_url, prompts=40, concurrency=4)))
        deadline = time.monotonic() + 30
        while fleet.store.stats(job_id).units[UnitState.DONE] < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        fleet.redis.client().flushall()  # every queued message gone, as after a Redis restart without disk
        assert fleet.store.stats(job_id).units[UnitState.PENDING] > 0
        units = fleet.wait_finished(job_id)  # the supervisor re-sends what has no message: no `gen resume`
    assert units[UnitState.DONE] == 40
    stats = fleet.store.stats(job_id)
    assert stats.records == 40 and stats.duplicates == 0
    assert set(fleet.accepted_per_unit(job_id).values()) == {1}


def test_two_workers_sharing_a_stated_rpm_never_trip_it(fleet, tmp_path):
    with Simulator(SimConfig(latency=0.05, rpm=240)) as sim:
        fleet.start(2)
        job_id = fleet.enqueue(write_job(tmp_path / "j.yml", sim_job(sim.base_url, prompts=24, rpm=240)))
        fleet.wait_finished(job_id)
        stats = sim.stats()
    assert stats["served_429"] == 0
    assert fleet.store.stats(job_id).units[UnitState.DONE] == 24


def test_a_429_storm_slows_the_job_but_fails_no_unit(fleet, tmp_path):
    with Simulator(SimConfig(latency=0.02, rpm=120)) as sim:
        fleet.start(2)
        job_id = fleet.enqueue(write_job(tmp_path / "j.yml", sim_job(sim.base_url, prompts=16, rpm=6000)))
        units = fleet.wait_finished(job_id, timeout=120)
        served_429 = sim.stats()["served_429"]
    assert served_429 > 0
    assert units[UnitState.DONE] == 16 and units[UnitState.FAILED] == 0
    assert fleet.store.stats(job_id).rate_limited == served_429


def test_bad_messages_are_refused_and_the_worker_keeps_working(fleet, tmp_path):
    worker, = fleet.start(1)
    import json
    import uuid

    from kombu import Connection

    with Connection(fleet.redis.url) as conn:
        producer = conn.Producer(serializer="json")
        producer.publish(b"\x80\x04 not json at all", routing_key="gen", exchange="", content_type="application/x-python-serialize",
                         content_encoding="binary", headers={"task": "gen.run_units", "id": str(uuid.uuid4())})
        producer.publish(json.dumps([["no-such-job", [1]], {}, {}]), routing_key="gen", exchange="",
                         content_type="application/json", content_encoding="utf-8",
                         headers={"task": "gen.run_units", "id": str(uuid.uuid4()), "lang": "py"})
        producer.publish(json.dumps([["a", "b", "c"], {}, {}]), routing_key="gen", exchange="",
                         content_type="application/json", content_encoding="utf-8",
                         headers={"task": "gen.run_units", "id": str(uuid.uuid4()), "lang": "py"})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not ("no-such-job" in worker.text() and "arguments are not" in worker.text()):
        time.sleep(0.1)
    log = worker.text()
    assert "not in the database" in log and "refused a message: gen.run_units arguments are not" in log
    assert "ContentDisallowed" in log or "disallowed" in log.lower()
    assert worker.alive()
    with Simulator(SimConfig(latency=0.01)) as sim:
        job_id = fleet.enqueue(write_job(tmp_path / "j.yml", sim_job(sim.base_url, prompts=3)))
        assert fleet.wait_finished(job_id)[UnitState.DONE] == 3


def test_budget_stops_dispatch_and_resume_with_a_higher_budget_finishes(fleet, tmp_path):
    prices = "    prices: {input_per_million: 100000, output_per_million: 100000}\n"
    with Simulator(SimConfig(latency=0.05)) as sim:
        fleet.start(1, concurrency=1)
        # max_tokens bounds each call's reserved cost (budget by reservation): $0.1 x (prompt + 150) < $20
        text_ = sim_job(sim.base_url, prompts=30, concurrency=1, extra_teacher="    max_tokens: 150\n" + prices,
                        run="run:\n  budget_usd: 20\n")
        job_id = fleet.enqueue(write_job(tmp_path / "j.yml", text_))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and fleet.store.get_job(job_id).status != "stopped":
            time.sleep(0.2)
        job = fleet.store.get_job(job_id)
        assert job.status == "stopped" and "budget reached" in job.status_reason
        time.sleep(1.5)
        stats = fleet.store.stats(job_id)
        assert 0 < stats.units[UnitState.DONE] < 30 and stats.units[UnitState.PENDING] > 0
        status = fleet.gen("status", job_id)
        assert "stopped: budget reached" in status.stdout
        resumed = fleet.gen("resume", job_id, "--budget-usd", "100000")
        assert resumed.returncode == 0, resumed.stderr
        units = fleet.wait_finished(job_id)
    assert units[UnitState.DONE] == 30
    assert fleet.store.stats(job_id).records == 30


def test_resume_retries_units_that_failed(fleet, tmp_path):
    with Simulator(SimConfig(latency=0.0, echo_key_status=500)) as sim:
        fleet.start(1, concurrency=4)
        job_id = fleet.enqueue(write_job(tmp_path / "j.yml", sim_job(
            sim.base_url, prompts=4, extra_teacher="    max_retries: 0\n", run="run:\n  unit_attempts: 1\n")))
        units = fleet.wait_finished(job_id)
        assert units[UnitState.FAILED] == 4
        sim.configure(echo_key_status=0)
        assert fleet.gen("resume", job_id).returncode == 0
        units = fleet.wait_finished(job_id)
    assert units[UnitState.DONE] == 4 and fleet.store.stats(job_id).records == 4


def test_cancel_stops_dispatching_and_resume_continues(fleet, tmp_path):
    with Simulator(SimConfig(latency=0.3)) as sim:
        fleet.start(1, concurrency=2)
        job_id = fleet.enqueue(write_job(tmp_path / "j.yml", sim_job(sim.base_url, prompts=60, concurrency=2)))
        deadline = time.monotonic() + 30
        while fleet.store.stats(job_id).units[UnitState.DONE] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fleet.gen("cancel", job_id).returncode == 0
        time.sleep(3.0)  # in-flight calls finish; queued batches are acknowledged without work
        settled = fleet.store.stats(job_id).units
        time.sleep(1.0)
        assert fleet.store.stats(job_id).units == settled, "nothing more is dispatched after a cancel"
        assert settled[UnitState.PENDING] > 0 and settled[UnitState.RUNNING] == 0
        assert "cancelled" in fleet.gen("status", job_id).stdout
        assert fleet.gen("resume", job_id).returncode == 0
        units = fleet.wait_finished(job_id)
    assert units[UnitState.DONE] == 60 and fleet.store.stats(job_id).duplicates == 0
