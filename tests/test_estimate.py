"""`gen estimate`: per-teacher calls, tokens and dollars before spending, from the call pattern or a sample;
kept with the job and shown beside the actual cost."""
from __future__ import annotations

import json
import re

import pytest

from conftest import ROOT, gen_cmd
from gen.store import Store


def db(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'gen.db'}")


def dollars(text: str, label: str) -> tuple[float, float]:
    line = next(line for line in text.splitlines() if line.strip().startswith(label))
    low, high = re.findall(r"\$([0-9.,]+)", line)[-2:]
    return float(low.replace(",", "")), float(high.replace(",", ""))


def earlier_system_prompts_job() -> None:
    """systemchat.yml reads the prompts of the `system_prompts` worked example (as the README runs them)."""
    made = gen_cmd("run", str(ROOT / "instructors" / "system_prompts.yml"), "--dry-run", "--sim-latency", "0.005", "-q")
    assert made.returncode == 0, made.stderr


def test_the_call_pattern_estimate_needs_no_key_and_spends_nothing(tmp_path):
    earlier_system_prompts_job()
    jobs_before = [j.id for j in db(tmp_path).list_jobs()]
    result = gen_cmd("estimate", str(ROOT / "instructors" / "systemchat.yml"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "16 units; estimate from the call pattern" in out
    for teacher in ("user", "assistant", "judge"):
        assert re.search(rf"^\s+{teacher}\s+\d+-\d+", out, re.M), out
    low, high = dollars(out, "total")
    assert 0 < low < high
    assert [j.id for j in db(tmp_path).list_jobs()] == jobs_before  # nothing ran, nothing recorded


@pytest.mark.parametrize("example, sample", [("respond.yml", 4), ("systemchat.yml", 5)])
def test_a_sampled_estimate_is_within_25_percent_of_the_actual_cost(tmp_path, example, sample):
    path = str(ROOT / "instructors" / example)
    if example == "systemchat.yml":
        earlier_system_prompts_job()
    estimate = gen_cmd("estimate", path, "--sample", str(sample), "--dry-run", "--sim-latency", "0.005")
    assert estimate.returncode == 0, estimate.stderr
    assert f"estimate from a sample of {sample} units (the sample cost $" in estimate.stdout
    low, high = dollars(estimate.stdout, "total")
    mid = (low + high) / 2
    run = gen_cmd("run", path, "--dry-run", "--sim-latency", "0.005", "-q")
    assert run.returncode in (0, 1), run.stderr  # 1: some units failed their checks in the simulator
    assert "estimate (sample)" in run.stderr
    store = db(tmp_path)
    job = next(j for j in store.list_jobs() if not j.name.endswith("-sample"))
    actual = store.stats(job.id).cost_usd
    assert actual > 0 and abs(mid - actual) <= 0.25 * actual, (low, high, actual)
    status = gen_cmd("status", job.id)
    assert f"estimate ${low:.4f}-${high:.4f} (sample) beside ${actual:.4f} actual" in status.stdout
    as_json = json.loads(gen_cmd("status", job.id, "--json").stdout)
    assert as_json["estimate"]["method"] == "sample" and as_json["estimate"]["sampled_units"] == sample


EXAMPLES = sorted(p.stem for p in (ROOT / "instructors").glob("*.yml"))
RUN_FIRST = {"systemchat": "system_prompts", "dpo_reroll": "respond"}  # examples that read an earlier job


def dry_run(name: str) -> None:
    result = gen_cmd("run", str(ROOT / "instructors" / f"{name}.yml"), "--dry-run", "--sim-latency", "0.005", "-q",
                     timeout=300)
    assert result.returncode in (0, 1), result.stderr  # 1: some units failed their checks in the simulator


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_call_pattern_range_holds_the_calls_of_a_dry_run(tmp_path, example):
    """Per teacher, the calls a dry run of each worked example makes fall in the call-pattern estimate's range
    (riddles with verify: a solver and a judge call per riddle, not one call per unit)."""
    import collections
    import os

    from gen.config import read_job_file
    from gen.core.estimate import pattern_estimate
    from gen.core.jobs import load_instructor

    if example in RUN_FIRST:
        dry_run(RUN_FIRST[example])
    spec = read_job_file(ROOT / "instructors" / f"{example}.yml")
    estimate = pattern_estimate(spec, load_instructor(spec, database_url=os.environ["GEN_DATABASE_URL"]))
    ranges = {t.teacher: t.calls for t in estimate.teachers}
    dry_run(example)
    store = db(tmp_path)
    job = next(j for j in store.list_jobs() if j.name == spec.name)
    actual = collections.Counter(call.teacher for call in store.calls_for_job(job.id))
    assert actual, "the dry run made calls"
    for teacher, calls in actual.items():
        assert teacher in ranges, f"{teacher} made {calls} calls; the estimate counts none"
        assert ranges[teacher].low <= calls <= ranges[teacher].high, (teacher, calls, ranges[teacher])
