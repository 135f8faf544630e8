"""`gen run` on the one job lifecycle: one driver per job, Ctrl-C that drains, streamed planning, bounded jobs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text

from conftest import gen_cmd, sim_job, write_job
from gen.simulator import SimConfig, Simulator
from gen.store import Store, UnitState


def start_run(job: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gen", "run", str(job), "-q", *extra], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=os.environ.copy())


def wait_for(predicate, timeout: float = 30.0, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def store_here(tmp_path: Path) -> Store:
    assert wait_for(lambda: (tmp_path / "gen.db").exists())
    return Store(os.environ["GEN_DATABASE_URL"])


def test_a_second_gen_run_of_the_same_job_is_refused_naming_the_first(tmp_path):
    with Simulator(SimConfig(latency=0.5)) as sim:
        job = write_job(tmp_path / "j.yml", sim_job(sim.base_url, prompts=24, concurrency=1))
        first = start_run(job)
        assert wait_for(lambda: sim.stats()["requests"] >= 1)
        second = gen_cmd("run", str(job), "-q")
        assert first.poll() is None, "the first run is still going"
        _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert second.returncode == 2
    assert f"being run right now by another gen run (pid {first.pid})" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
    store = Store(os.environ["GEN_DATABASE_URL"])
    job_id = store.list_jobs()[0].id
    stats = store.stats(job_id)
    assert stats.units[UnitState.DONE] == 24 and stats.records == 24 and stats.duplicates == 0
    with store.engine.connect() as conn:
        twice = conn.execute(text("SELECT unit_id FROM calls WHERE accepted GROUP BY unit_id HAVING count(*) > 1"))
        assert twice.all() == []


def test_a_killed_gen_run_does_not_hold_the_job(tmp_path):
    with Simulator(SimConfig(latency=0.3)) as sim:
        job = write_job(tmp_path / "j.yml", sim_job(sim.base_url, prompts=6, concurrency=2))
        first = start_run(job)
        assert wait_for(lambda: sim.stats()["requests"] >= 1)
        first.kill()
        first.wait()
        again = gen_cmd("run", str(job), "-q")
    assert again.returncode == 0, again.stderr
    assert "resuming job" in again.stderr


def test_a_run_killed_while_its_plan_is_written_resumes_it_and_runs_every_unit_once(tmp_path):
    """`gen run` feeds a job's units to its teachers as soon as their chunk of the plan is committed, while the
    planner writes the next chunk. Killed right after the second chunk's commit (the plan two-thirds written, the
    first chunk's units being fed), the same command again plans the rest from where it stopped and runs every
    unit exactly once: one accepted call and one record each, no duplicate."""
    units = 2 * 2000 + 1  # three chunks of the plan (gen.core.lifecycle.PLAN_CHUNK)
    with open(tmp_path / "prompts.jsonl", "w") as f:
        for i in range(units):
            f.write(f'{{"prompt": "Question {i}: what is {i} plus {i}?"}}\n')
    with Simulator(SimConfig(latency=0.05)) as sim:
        job = write_job(tmp_path / "j.yml", sim_job(sim.base_url, concurrency=100, instructor=(
            "  type: respond\n  prompts_file: prompts.jsonl\n")))
        killed = subprocess.run([sys.executable, "-m", "gen", "run", str(job), "-q"], capture_output=True, text=True,
                                env={**os.environ, "GEN_FAILPOINT": "after-plan-chunk:2"}, timeout=120)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        store = store_here(tmp_path)
        half = store.list_jobs()[0]
        assert half.planned_units == 4000 and not half.planning_done
        again = gen_cmd("run", str(job), "-q", timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resuming job" in again.stderr
    stats = store.stats(half.id)
    assert stats.units[UnitState.DONE] == stats.total_units == units
    assert stats.records == units and stats.duplicates == 0
    with store.engine.connect() as conn:
        accepted = dict(conn.execute(text("SELECT unit_id, count(*) FROM calls WHERE accepted GROUP BY unit_id")).all())
    assert len(accepted) == units and set(accepted.values()) == {1}
    assert store.get_job(half.id).planning_done


def test_the_first_ctrl_c_lets_calls_in_flight_finish_and_keeps_them(tmp_path):
    with Simulator(SimConfig(latency=1.5)) as sim:
        job = write_job(tmp_path / "j.yml", sim_job(sim.base_url, prompts=30, concurrency=10))
        proc = start_run(job)
        assert wait_for(lambda: sim.stats()["requests"] >= 10)
        sent_at_interrupt = sim.stats()["requests"]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        served = sim.stats()["by_status"].get("200", 0)
        assert sim.stats()["requests"] == sent_at_interrupt, "no call started after Ctrl-C"
        assert proc.returncode == 130, err
        assert "calls in flight finished and were recorded" in err and "Traceback" not in err
        store = store_here(tmp_path)
        job_id = store.list_jobs()[0].id
        with store.engine.connect() as conn:
            cancelled = conn.execute(text("SELECT count(*) FROM calls WHERE error_kind = 'Cancelled'")).scalar()
            recorded = conn.execute(text("SELECT count(*) FROM calls WHERE status = 200")).scalar()
        assert cancelled == 0 and recorded == served == sent_at_interrupt, "every call in flight was kept"
        before = store.stats(job_id)
        assert before.units[UnitState.DONE] == sent_at_interrupt and before.units[UnitState.RUNNING] == 0
        again = gen_cmd("run", str(job), "-q")
        assert again.returncode == 0, again.stderr
        assert sim.stats()["by_status"].get("200", 0) - served == 30 - sent_at_interrupt, "nothing bought twice"


def test_a_count_past_the_bound_is_one_line_and_writes_nothing(tmp_path):
    job = write_job(tmp_path / "j.yml", "name: huge\ninstructor:\n  type: riddles\n  count: 1000000000000\n"
                    "teachers:\n  main: {provider: openai-compatible, model: m, base_url: http://127.0.0.1:9/v1}\n")
    result = gen_cmd("run", str(job), "--dry-run")
    assert result.returncode == 2
    assert "instructor.count: at most 100,000,000 units per job" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "gen.db").exists()


def test_ten_million_units_start_at_once_with_flat_memory(tmp_path):
    body = ("name: ten-million\ninstructor:\n  type: riddles\n  count: 100000000\n  batch_size: 10\n"
            "  near_duplicate_threshold: null\n")
    with Simulator(SimConfig(latency=0.05)) as sim:
        job = write_job(tmp_path / "j.yml", body + "teachers:\n  main:\n    provider: openai-compatible\n"
                        f"    model: m\n    base_url: {sim.base_url}\n    max_concurrency: 8\n")
        started = time.monotonic()
        proc = start_run(job)
        try:
            assert wait_for(lambda: sim.stats()["requests"] >= 1, timeout=20), "the first call leaves within seconds"
            first_call = time.monotonic() - started
            store = store_here(tmp_path)
            assert wait_for(lambda: (store.list_jobs() or [None])[0] is not None
                            and store.list_jobs()[0].planned_units >= 200_000, timeout=90)
            rss_mb = int(next(line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                              if line.startswith("VmRSS")).split()[1]) / 1024
        finally:
            proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)
    job_row = store.list_jobs()[0]
    assert first_call < 15
    assert rss_mb < 200, f"{rss_mb:.0f} MB with {job_row.planned_units} units planned"
    assert not job_row.planning_done and job_row.planned_units < 10_000_000
    assert proc.returncode == 130


def test_status_says_when_a_fleet_job_waits_with_no_message(tmp_path):
    """After a Redis restart the queue is empty: `gen status` says why nothing moves instead of showing 0 calls/min."""
    store = Store(os.environ["GEN_DATABASE_URL"])
    job = store.create_job(name="fleet", instructor="respond", spec={"run": {}}, spec_hash="x",
                           units=[(f"u{i}", {}) for i in range(3)])
    ids = store.runnable_unit_ids(job.id, max_attempts=3)
    store.mark_dispatched(ids)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE units SET dispatched_at = :t"), {"t": "2000-01-01 00:00:00"})
    out = gen_cmd("status", job.id)
    assert out.returncode == 0, out.stderr
    assert "3 pending units have had no queue message" in out.stdout
