"""`gen run` end to end against the simulator over real HTTP: dry runs, rate limits, Ctrl-C and resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from sqlalchemy import text

from conftest import ROOT, gen_cmd, sim_job, write_job
from gen.simulator import SimConfig, Simulator
from gen.store import Store, UnitState


def db(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'gen.db'}")


def test_dry_run_of_the_worked_examples_needs_no_keys(tmp_path):
    for example, instructor in (("riddles.yml", "riddles"), ("respond.yml", "respond")):
        result = gen_cmd("run", str(ROOT / "instructors" / example), "--dry-run", "--sim-latency", "0.01")
        assert result.returncode == 0, result.stderr
        assert "dry run" in result.stderr and "units done" in result.stderr
    store = db(tmp_path)
    jobs = {job.instructor: job for job in store.list_jobs()}
    assert set(jobs) == {"riddles", "respond"}
    riddles = store.stats(jobs["riddles"].id)
    assert riddles.units[UnitState.DONE] == riddles.total_units == 12
    near = store.near_duplicates(jobs["riddles"].id)
    assert riddles.records + riddles.duplicates + near == 60  # 12 batches of 5, duplicates dropped and counted
    respond = store.stats(jobs["respond"].id)
    assert respond.records == respond.total_units == 12
    status = gen_cmd("status", "riddles-demo")
    assert status.returncode == 0 and "12/12 finished" in status.stdout
    listing = gen_cmd("jobs")
    assert "riddles-demo" in listing.stdout and "respond-demo" in listing.stdout


def test_riddles_duplicates_are_dropped_across_the_job(tmp_path):
    with Simulator(SimConfig(latency=0.0, seed=1)) as sim:
        job = write_job(tmp_path / "r.yml", sim_job(sim.base_url, name="r", instructor=(
            "  type: riddles\n  count: 20\n  batch_size: 5\n")))
        assert gen_cmd("run", str(job), "-q").returncode == 0
    store = db(tmp_path)
    job_id = store.list_jobs()[0].id
    # The same riddle stored again under the job is refused by its key, and counted as a duplicate.
    unit = store.units(job_id)[0]
    record = next(store.iter_records(job_id))
    from gen.types import NewRecord

    inserted, dups = store.finish_unit_with_records(job_id, unit.id, [NewRecord(record.key, record.conversation)], [])
    assert (inserted, dups) == (0, 1)


def test_stated_rpm_means_no_429_from_a_provider_enforcing_it(tmp_path):
    with Simulator(SimConfig(latency=0.05, rpm=300)) as sim:
        job = write_job(tmp_path / "j.yml", sim_job(sim.base_url, prompts=30, rpm=300, concurrency=16))
        started = time.monotonic()
        result = gen_cmd("run", str(job), "-q")
        elapsed = time.monotonic() - started
        stats = sim.stats()
    assert result.returncode == 0, result.stderr
    assert stats["served_429"] == 0
    assert stats["by_status"].get("200") == 30
    assert elapsed >= 5.5  # 30 requests paced at 5 per second
    store = db(tmp_path)
    assert store.stats(store.list_jobs()[0].id).records == 30


def test_gen_run_keeps_max_concurrency_calls_really_in_flight(tmp_path):
    # The teacher sees as many requests at once as max_concurrency allows (counted at the simulator): claims,
    # call rows and settles wait on shared transactions, not on each other.
    with Simulator(SimConfig(latency=0.6)) as sim:
        job = write_job(tmp_path / "j.yml", sim_job(sim.base_url, prompts=600, concurrency=120))
        result = gen_cmd("run", str(job), "-q")
        stats = sim.stats()
    assert result.returncode == 0, result.stderr
    assert stats["by_status"].get("200") == 600
    assert stats["peak_in_flight"] == 120


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(tmp_path):
    with Simulator(SimConfig(latency=0.4)) as sim:
        job = write_job(tmp_path / "j.yml", sim_job(sim.base_url, prompts=40, concurrency=4))
        proc = subprocess.Popen([sys.executable, "-m", "gen", "run", str(job), "-q"], stderr=subprocess.PIPE,
                                text=True, env=os.environ.copy())
        store = db(tmp_path) if _wait_for_db(tmp_path) else None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with store.engine.connect() as conn:
                if conn.execute(text("SELECT count(*) FROM records")).scalar() >= 8:
                    break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err
        job_id = store.list_jobs()[0].id
        before = store.stats(job_id)
        assert 8 <= before.units[UnitState.DONE] < 40
        assert before.units[UnitState.RUNNING] == 0  # nothing left claimed by a driver that stopped
        paid_before = sim.stats()["by_status"].get("200", 0)

        again = gen_cmd("run", str(job), "-q")
        assert again.returncode == 0, again.stderr
        assert "resuming job" in again.stderr
        paid_total = sim.stats()["by_status"].get("200", 0)

    after = store.stats(job_id)
    assert after.units[UnitState.DONE] == 40 and after.records == 40 and after.duplicates == 0
    # Finished units were not redone: the second run paid only for the units that were not finished.
    assert paid_total - paid_before <= 40 - before.units[UnitState.DONE]
    with store.engine.connect() as conn:
        per_unit = conn.execute(text(
            "SELECT unit_id, count(*) FROM calls WHERE accepted GROUP BY unit_id HAVING count(*) > 1")).all()
    assert per_unit == []


def test_a_call_paid_for_before_a_crash_is_replayed_not_repeated(tmp_path):
    with Simulator(SimConfig(latency=0.0)) as sim:
        job = write_job(tmp_path / "j.yml", sim_job(sim.base_url, prompts=3))
        assert gen_cmd("run", str(job), "-q").returncode == 0
        store = db(tmp_path)
        job_id = store.list_jobs()[0].id
        unit = store.units(job_id)[1]
        # The state a crash leaves between "answer accepted" and "record stored": the call is in the journal,
        # the unit is still running and has no record.
        with store.engine.begin() as conn:
            conn.execute(text("DELETE FROM records WHERE unit_id = :u"), {"u": unit.id})
            conn.execute(text("UPDATE units SET state = 'running' WHERE id = :u"), {"u": unit.id})
        requests_before = sim.stats()["requests"]
        result = gen_cmd("run", str(job))
        assert result.returncode == 0, result.stderr
        assert "replayed 1" in result.stderr
        assert sim.stats()["requests"] == requests_before
    stats = store.stats(job_id)
    assert stats.records == 3 and stats.units[UnitState.DONE] == 3 and stats.calls == 3


def test_a_changed_job_file_starts_a_new_job_and_new_forces_one(tmp_path):
    with Simulator(SimConfig(latency=0.0)) as sim:
        job = write_job(tmp_path / "j.yml", sim_job(sim.base_url, prompts=2))
        first = gen_cmd("run", str(job), "-q")
        same = gen_cmd("run", str(job), "-q")
        assert "resuming job" in same.stderr
        write_job(tmp_path / "j.yml", sim_job(sim.base_url, prompts=3))
        changed = gen_cmd("run", str(job), "-q")
        forced = gen_cmd("run", str(job), "-q", "--new")
    assert all(r.returncode == 0 for r in (first, same, changed, forced))
    assert len(db(tmp_path).list_jobs()) == 3


def _wait_for_db(tmp_path, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (tmp_path / "gen.db").exists():
            time.sleep(0.3)
            return True
        time.sleep(0.05)
    raise AssertionError("gen run never created its database")


def test_budget_stops_a_local_run_and_raising_it_in_the_file_continues_the_same_job(tmp_path):
    prices = "    prices: {input_per_million: 100000, output_per_million: 100000}\n"
    with Simulator(SimConfig(latency=0.0)) as sim:
        # max_tokens bounds each call's reserved cost (budget by reservation): $0.1 x (prompt + 150) < $20
        text_ = sim_job(sim.base_url, prompts=20, concurrency=1, extra_teacher="    max_tokens: 150\n" + prices)
        job = write_job(tmp_path / "j.yml", text_ + "run:\n  budget_usd: 20\n")
        first = gen_cmd("run", str(job), "-q")
        assert first.returncode == 1 and "budget reached" in first.stderr
        store = db(tmp_path)
        job_id = store.list_jobs()[0].id
        done_first = store.stats(job_id).units[UnitState.DONE]
        assert 0 < done_first < 20
        assert "stopped: budget reached" in gen_cmd("status", job_id).stdout
        write_job(tmp_path / "j.yml", text_ + "run:\n  budget_usd: 1000000\n")
        second = gen_cmd("run", str(job), "-q")
        assert second.returncode == 0 and "resuming job " + job_id in second.stderr
    assert len(store.list_jobs()) == 1
    assert store.stats(job_id).units[UnitState.DONE] == 20


def test_failed_units_are_retried_when_the_same_command_runs_again(tmp_path):
    """The teacher fails every call (unit_attempts: 1), the run ends saying to run it again; once the teacher is
    back, running the same command again retries the failed units and finishes them."""
    with Simulator(SimConfig(latency=0.0, echo_key_status=500)) as sim:
        job = write_job(tmp_path / "j.yml", sim_job(sim.base_url, prompts=3, extra_teacher="    max_retries: 0\n",
                                                    run="run:\n  unit_attempts: 1\n"))
        first = gen_cmd("run", str(job), "-q")
        assert first.returncode != 0 and "run the same command again to retry them" in first.stderr
        sim.configure(echo_key_status=0)
        again = gen_cmd("run", str(job), "-q")
        assert again.returncode == 0, again.stderr
    store = Store(f"sqlite:///{tmp_path / 'gen.db'}")
    job_id = store.list_jobs()[0].id
    assert store.stats(job_id).units[UnitState.DONE] == 3 and store.stats(job_id).records == 3
    assert {u.attempts for u in store.units(job_id)} == {2}, "one failed attempt, then the one that passed"
