"""Target mode: `instructor.target: N` plans units in waves until N records pass every check, then keeps exactly
N; the budget still stops it, and says so."""
from __future__ import annotations

import json

from conftest import gen_cmd, sim_job, write_job
from gen.simulator import SimConfig, Simulator
from gen.store import Store, UnitState
from test_systemchat import JUDGE_MARK, MAY_END_MARK, PROMPTS, SENTINEL, chat_job, judge_answer


def db(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'gen.db'}")


def test_target_mode_plans_waves_until_exactly_n_records_pass_the_judge(tmp_path):
    with Simulator(SimConfig(latency=0.0, seed=4)) as sim:
        # The judge fails every other conversation: a yield of about one half.
        sim.script([{"match": JUDGE_MARK, "answers": [judge_answer(2, 1), judge_answer(2, 5)] * 100},
                    {"match": MAY_END_MARK, "answers": [f"Thanks, bye. {SENTINEL}"]}])
        job = write_job(tmp_path / "t.yml", chat_job(sim.base_url, PROMPTS + (
            "  target: 6\n  min_turns: 2\n  max_turns: 2\n  no_system_ratio: 0\n"
            "  judge_rule: mean\n  judge_threshold: 3\n")))
        result = gen_cmd("run", str(job), "-q")
        assert result.returncode == 0, result.stderr
        assert "target: 6 of 6 records accepted" in result.stderr
    store = db(tmp_path)
    job_id = store.list_jobs()[0].id
    units = store.stats(job_id).units
    assert units[UnitState.REJECTED] >= 3, "some conversations were judged out"
    # wave 1: 6 units (about 3 pass); later waves sized by the observed yield: never far past what 6 need. The
    # judge's scores go to judge calls in arrival order, so a wave's yield varies (18 units seen in 1 run of 6)
    total = sum(units.values())
    assert 9 <= total <= 20
    exported = gen_cmd("export", job_id, "-o", "out.jsonl", "--format", "sharegpt")
    assert exported.returncode == 0, exported.stderr
    with open("out.jsonl", encoding="utf-8") as f:
        assert len([json.loads(line) for line in f]) == 6
    status = gen_cmd("status", job_id)
    assert "target   6/6 accepted records; observed yield" in status.stdout


def test_target_mode_stops_at_the_budget_and_says_so(tmp_path):
    with Simulator(SimConfig(latency=0.0, seed=4)) as sim:
        # max_tokens bounds what a call may cost, which is what the budget reserves before sending it
        prices = "    max_tokens: 100\n    prices:\n      input_per_million: 20000\n      output_per_million: 20000\n"
        job = write_job(tmp_path / "b.yml", sim_job(
            sim.base_url, instructor="  type: respond\n  target: 40\n  prompts:\n" + "".join(
                f"    - \"Question number {i}: what is {i} plus {i}?\"\n" for i in range(60)),
            concurrency=2, extra_teacher=prices, run="run:\n  budget_usd: 5\n"))
        result = gen_cmd("run", str(job), "-q")
    assert result.returncode == 1
    assert "stopped: budget reached" in result.stderr
    accepted = int(result.stderr.split("target: ")[1].split(" of 40")[0])
    assert 0 < accepted < 40
    store = db(tmp_path)
    assert store.stats(store.list_jobs()[0].id).units[UnitState.PENDING] > 0


def test_records_past_the_target_from_units_retried_after_the_plan_ran_out_are_surplus(tmp_path):
    """The plan runs out (4 prompts) with every unit failed; run again, the failed units are retried and all 4
    pass: the job still keeps exactly its target, the others are surplus."""
    with Simulator(SimConfig(latency=0.0, seed=4, echo_key_status=500)) as sim:
        job = write_job(tmp_path / "t.yml", sim_job(
            sim.base_url, instructor="  type: respond\n  target: 2\n  prompts:\n" + "".join(
                f"    - \"Question number {i}: what is {i} plus {i}?\"\n" for i in range(4)),
            extra_teacher="    max_retries: 0\n", run="run:\n  unit_attempts: 1\n"))
        first = gen_cmd("run", str(job), "-q")
        assert first.returncode != 0
        sim.configure(echo_key_status=0)
        again = gen_cmd("run", str(job), "-q")
        assert again.returncode == 0, again.stderr
    store = db(tmp_path)
    job_id = store.list_jobs()[0].id
    assert store.stats(job_id).units[UnitState.DONE] == 4
    assert store.record_counts(job_id).get("surplus") == 2
    exported = gen_cmd("export", job_id, "-o", "out.jsonl")
    assert exported.returncode == 0, exported.stderr
    with open("out.jsonl", encoding="utf-8") as f:
        assert len(f.readlines()) == 2
