"""Target mode on the fleet: `gen enqueue` plans a first wave, the elected supervisor plans each next one with
gen run's planner (gen.core.target) once the wave before is settled, and finishes the job at exactly N accepted
records; the budget still stops it, and says so. Real worker processes, Redis, PostgreSQL and the simulator."""
from __future__ import annotations

import json
import time

from conftest import sim_job, write_job
from gen.core.target import accepted_records
from gen.simulator import SimConfig, Simulator
from gen.store import UnitState
from test_fleet import fleet  # noqa: F401 (the fixture: the test's own Redis, a fresh PostgreSQL database)
from test_systemchat import JUDGE_MARK, MAY_END_MARK, PROMPTS, SENTINEL, chat_job, judge_answer


def wait_status(fleet, job_id: str, status: str, timeout: float = 120) -> None:  # noqa: F811
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fleet.store.get_job(job_id).status == status:
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} is {fleet.store.get_job(job_id).status}, not {status}: "
                         f"{fleet.store.stats(job_id)}")


def test_target_mode_on_the_fleet_plans_waves_until_exactly_n_records_pass(fleet, tmp_path):  # noqa: F811
    with Simulator(SimConfig(latency=0.05, seed=4)) as sim:
        # The judge fails every other conversation: a yield of one half.
        sim.script([{"match": JUDGE_MARK, "answers": [judge_answer(2, 1), judge_answer(2, 5)] * 100},
                    {"match": MAY_END_MARK, "answers": [f"Thanks, bye. {SENTINEL}"]}])
        fleet.start(2)
        job_file = write_job(tmp_path / "t.yml", chat_job(sim.base_url, PROMPTS + (
            "  target: 6\n  min_turns: 2\n  max_turns: 2\n  no_system_ratio: 0\n"
            "  judge_rule: mean\n  judge_threshold: 3\n")))
        enqueued = fleet.gen("enqueue", str(job_file))
        assert enqueued.returncode == 0, enqueued.stderr
        assert "6 units sent to queue 'gen' (target mode: a first wave" in enqueued.stderr
        job_id = enqueued.stdout.strip()
        wait_status(fleet, job_id, "finished")
    store = fleet.store
    job = store.get_job(job_id)
    assert job.planning_done
    units = store.stats(job_id).units
    assert units[UnitState.PENDING] == units[UnitState.RUNNING] == 0
    assert units[UnitState.REJECTED] >= 3, "some conversations were judged out"
    # wave 1: 6 units (3 pass at a yield of one half); the next wave sized by that yield: 6 more
    assert 9 <= sum(units.values()) <= 16
    assert accepted_records(store, job_id) == 6
    exported = fleet.gen("export", job_id, "-o", "out.jsonl", "--format", "sharegpt")
    assert exported.returncode == 0, exported.stderr
    with open("out.jsonl", encoding="utf-8") as f:
        assert len([json.loads(line) for line in f]) == 6
    status = fleet.gen("status", job_id)
    assert "finished" in status.stdout.splitlines()[0]
    assert "target   6/6 accepted records; observed yield 0.50 records per settled unit" in status.stdout
    again = fleet.gen("resume", job_id)  # a met target has nothing to resume
    assert again.returncode == 0 and "0 units sent" in again.stderr
    assert store.get_job(job_id).status == "finished"


def test_target_mode_on_the_fleet_stops_at_the_budget_says_so_and_resumes_to_exactly_n(fleet, tmp_path):  # noqa: F811
    prices = "    max_tokens: 100\n    prices:\n      input_per_million: 20000\n      output_per_million: 20000\n"
    with Simulator(SimConfig(latency=0.05, seed=4)) as sim:
        fleet.start(1, concurrency=2)
        job_file = write_job(tmp_path / "b.yml", sim_job(
            sim.base_url, instructor="  type: respond\n  target: 40\n  prompts:\n" + "".join(
                f"    - \"Question number {i}: what is {i} plus {i}?\"\n" for i in range(60)),
            concurrency=2, extra_teacher=prices, run="run:\n  budget_usd: 5\n"))
        job_id = fleet.enqueue(job_file)
        wait_status(fleet, job_id, "stopped", timeout=60)
        time.sleep(1.5)  # calls in flight settle; no wave is planned for a stopped job
        store = fleet.store
        job = store.get_job(job_id)
        assert "budget reached" in job.status_reason and not job.planning_done
        status = fleet.gen("status", job_id)
        assert "stopped: budget reached" in status.stdout
        accepted = accepted_records(store, job_id)
        assert 0 < accepted < 40
        assert f"target   {accepted}/40 accepted records" in status.stdout
        assert store.stats(job_id).units[UnitState.PENDING] > 0
        assert store.get_job(job_id).planned_units == 40, "one wave only: what 40 records need at one per unit"
        resumed = fleet.gen("resume", job_id, "--budget-usd", "100000")
        assert resumed.returncode == 0, resumed.stderr
        wait_status(fleet, job_id, "finished")
    assert accepted_records(store, job_id) == 40
    assert store.get_job(job_id).planned_units == 40
