"""Riddles: blind verification by a solver and a judge, near-duplicates across units, and the teachers it needs."""
from __future__ import annotations

import json

import pytest

from conftest import gen_cmd, sim_job, write_job
from gen.config import parse_job
from gen.core.jobs import load_instructor
from gen.core.report import status_lines
from gen.errors import JobFileError
from gen.store import UnitState
from test_neardup import run_directly

PIANO = ("What has many keys but cannot open a single lock?", "a piano")
TOWEL = ("What gets wetter and wetter the more it dries?", "a towel")
WRITE = "original riddles about"          # in the riddle-writing prompt
SOLVE = "Solve this riddle."              # in the solver's prompt
SOLVE_ASK = SOLVE + " Reply with your answer in a few words, and nothing else."
JUDGE = "Decide whether the two answers agree"


def batch(*riddles: tuple[str, str]) -> str:
    return json.dumps({"riddles": [{"question": q, "answer": a} for q, a in riddles]})


def verdict(agree: bool, reason: str) -> str:
    return json.dumps({"reason": reason, "agree": agree})


def teacher(base_url: str, name: str) -> str:
    return (f"  {name}:\n    provider: openai-compatible\n    model: sim-{name}\n    base_url: {base_url}\n"
            "    timeout: 10\n")


def riddles_job(base_url: str, options: str, teachers: tuple[str, ...] = ("solver", "judge")) -> str:
    return sim_job(base_url, name="riddles", instructor=f"  type: riddles\n{options}",
                   extra_teacher="".join(teacher(base_url, t) for t in teachers))


def script_blind_answers(sim, *, piano: str, towel: str) -> None:
    sim.script([
        {"match": WRITE, "answers": [batch(PIANO, TOWEL)]},
        {"match": f"{SOLVE_ASK}\n\n{PIANO[0]}", "answers": [piano]},
        {"match": f"{SOLVE_ASK}\n\n{TOWEL[0]}", "answers": [towel]},
        {"match": "Solver's answer: A piano.", "answers": [verdict(True, "Both answers name a piano.")]},
        {"match": "Solver's answer: a sponge", "answers": [verdict(False, "A sponge is not a towel.")]},
    ])


def test_a_riddle_whose_blind_answer_disagrees_is_rejected_and_kept_for_review(sim, tmp_path):
    script_blind_answers(sim, piano="A piano.", towel="a sponge")
    store, job_id, results = run_directly(tmp_path, riddles_job(
        sim.base_url, "  count: 2\n  batch_size: 2\n  verify: true\n  on_disagreement: reject\n"))
    assert [r.state for r in results] == [UnitState.DONE]
    [kept] = store.iter_records(job_id, kind="conversation")
    assert kept.conversation == [{"role": "user", "content": PIANO[0]}, {"role": "assistant", "content": "a piano"}]
    assert kept.meta["verified"] is True and kept.meta["solver_answer"] == "A piano."
    [rejected] = store.iter_records(job_id, kind="rejected")
    assert rejected.conversation[0]["content"] == TOWEL[0]
    assert rejected.meta["verified"] is False and rejected.meta["solver_answer"] == "a sponge"
    assert "solver said 'a sponge'" in rejected.meta["rejected_because"]
    assert "A sponge is not a towel." in rejected.meta["rejected_because"]
    assert store.stats(job_id).records == 1
    # the solver answered blind: its requests never contained the riddles' answers
    solver_calls = [c for c in store.calls_for_job(job_id) if c.teacher == "solver"]
    assert len(solver_calls) == 2
    assert not any(answer in json.dumps(c.messages) for c in solver_calls for answer in ("piano", "towel"))
    assert len([c for c in store.calls_for_job(job_id) if c.teacher == "judge"]) == 2


def test_when_every_riddle_of_a_batch_disagrees_the_unit_is_rejected(sim, tmp_path):
    sim.script([
        {"match": WRITE, "answers": [batch(TOWEL)]},
        {"match": SOLVE, "answers": ["a sponge"]},
        {"match": JUDGE, "answers": [verdict(False, "A sponge is not a towel.")]},
    ])
    store, job_id, results = run_directly(tmp_path, riddles_job(sim.base_url, "  count: 1\n  verify: true\n"))
    assert [r.state for r in results] == [UnitState.REJECTED]
    assert "blind answer disagrees" in store.units(job_id)[0].last_error
    assert len(list(store.iter_records(job_id, kind="rejected"))) == 1


def test_flag_keeps_a_disagreeing_riddle_marked_unverified(sim, tmp_path):
    script_blind_answers(sim, piano="A piano.", towel="a sponge")
    store, job_id, _ = run_directly(tmp_path, riddles_job(
        sim.base_url, "  count: 2\n  batch_size: 2\n  verify: true\n  on_disagreement: flag\n"))
    records = {r.conversation[0]["content"]: r for r in store.iter_records(job_id)}
    assert {r.kind for r in records.values()} == {"conversation"}
    assert records[PIANO[0]].meta["verified"] is True
    assert records[TOWEL[0]].meta["verified"] is False
    assert records[TOWEL[0]].meta["judge_reason"] == "A sponge is not a towel."


def test_near_duplicate_riddles_are_dropped_across_units_and_exact_ones_by_key(sim, tmp_path):
    loose = "What has so many keys but cannot open a single lock?"  # estimated Jaccard 0.89 with PIANO
    sim.script([
        {"match": "This is batch 1 of", "answers": [batch(PIANO, TOWEL)]},
        {"match": "This is batch 2 of", "answers": [batch((loose, "a keyboard"), (TOWEL[0] + "  ", "a towel"))]},
        {"match": "This is batch 3 of", "answers": [batch(("What has a neck but no head?", "a bottle"),
                                                           ("What has hands but cannot clap?", "a clock"))]},
    ])
    store, job_id, results = run_directly(tmp_path, riddles_job(
        sim.base_url, "  count: 6\n  batch_size: 2\n", teachers=()))
    assert [r.state for r in results] == [UnitState.DONE] * 3
    stats = store.stats(job_id)
    assert (stats.records, stats.duplicates, store.near_duplicates(job_id)) == (4, 1, 1)
    questions = {r.conversation[0]["content"] for r in store.iter_records(job_id)}
    assert loose not in questions and PIANO[0] in questions
    assert "  near-dup 1 near-duplicates dropped" in status_lines(store, store.get_job(job_id))


def test_without_the_index_the_riddles_job_is_as_before(sim, tmp_path):
    sim.script([{"match": WRITE, "answers": [batch(PIANO, ("What has so many keys but cannot open a single lock?",
                                                               "a piano"))]}])
    store, job_id, _ = run_directly(tmp_path, riddles_job(sim.base_url, "  count: 2\n  batch_size: 2\n",
                                                          teachers=()), neardup=False)
    assert store.stats(job_id).records == 2 and store.near_duplicates(job_id) == 0


@pytest.mark.parametrize("teachers, missing", [((), "solver"), (("solver",), "judge"), (("judge",), "solver")])
def test_verify_needs_a_solver_and_a_judge_and_names_the_missing_one(teachers, missing):
    job = {"name": "r", "instructor": {"type": "riddles", "count": 5, "verify": True},
           "teachers": {name: {"provider": "openai-compatible", "model": "m", "base_url": "http://x"}
                        for name in ("main", *teachers)}}
    with pytest.raises(JobFileError, match=f"needs a teacher named '{missing}'"):
        load_instructor(parse_job(job))
    job["instructor"]["verify"] = False
    load_instructor(parse_job(job))  # without verify, main is enough


def test_gen_validate_reports_the_missing_judge(tmp_path):
    job = write_job(tmp_path / "r.yml", riddles_job("http://127.0.0.1:9/v1", "  count: 5\n  verify: true\n",
                                                    teachers=("solver",)))
    result = gen_cmd("validate", str(job))
    assert result.returncode == 2
    assert "teachers: instructor 'riddles' with verify: true needs a teacher named 'judge'" in result.stderr


def test_on_disagreement_accepts_only_reject_or_flag():
    job = {"name": "r", "instructor": {"type": "riddles", "count": 5, "on_disagreement": "ignore"},
           "teachers": {"main": {"provider": "openai-compatible", "model": "m", "base_url": "http://x"}}}
    with pytest.raises(JobFileError, match=r"instructor\.on_disagreement"):
        load_instructor(parse_job(job))
