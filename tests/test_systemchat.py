"""SystemChat end to end against the simulator over real HTTP: system prompts, conversations, judge, checks."""
from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import text

from conftest import ROOT, gen_cmd, write_job
from gen.export import line_validator
from gen.instructors.systemchat.constraints import constraint_problems, parse_constraint, parse_constraints
from gen.instructors.systemchat.filters import TurnFilter
from gen.simulator import SimConfig, Simulator
from gen.store import Store, UnitState
from fleet_helpers import paid_after_kill, calls_since
from test_fleet import fleet  # noqa: F401  (the fixture)

SENTINEL = "<<END>>"
JUDGE_MARK = "You are grading how faithfully"          # only in the judge's messages
MAY_END_MARK = "You may now end the conversation"      # only in the simulated user's, once min_turns are done
KEEP_GOING_MARK = "Keep the conversation going"        # only in the simulated user's, before min_turns


def teachers(base_url: str, *, judge: bool = True, concurrency: int = 16) -> str:
    names = ["user", "assistant"] + (["judge"] if judge else [])
    return "teachers:\n" + "".join(
        f"  {n}:\n    provider: openai-compatible\n    model: sim-{n}\n    base_url: {base_url}\n"
        f"    max_concurrency: {concurrency}\n    timeout: 10\n" for n in names)


def chat_job(base_url: str, instructor: str, *, name: str = "chat", judge: bool = True,
             judge_teacher: bool | None = None, run: str = "") -> str:
    """A systemchat job whose teachers are the simulator; `judge: false` also leaves the judge teacher out."""
    option = "" if judge else "  judge: false\n"
    judge_teacher = judge if judge_teacher is None else judge_teacher
    return (f"name: {name}\ninstructor:\n  type: systemchat\n{instructor}{option}"
            f"{teachers(base_url, judge=judge_teacher)}{run}")


def judge_answer(n: int, score: int = 5) -> str:
    return json.dumps({"turns": [{"reason": "Keeps to the system prompt.", "score": score}] * n})


def db(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'gen.db'}")


def run_ok(job) -> str:
    result = gen_cmd("run", str(job), "-q")
    assert result.returncode == 0, result.stderr
    return result.stderr


def export(job: str, fmt: str, *extra: str) -> list[dict]:
    result = gen_cmd("export", job, "-o", f"{job}.{fmt}.jsonl", "--format", fmt, *extra)
    assert result.returncode == 0, result.stderr
    with open(f"{job}.{fmt}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


PROMPTS = """  system_prompts:
    - You are Jeeves, a polite Victorian butler who never uses modern slang.
    - {prompt: "You help only with houseplants and steer every other topic back to plants.", category: purpose}
    - {prompt: "Format every reply as a short bullet list.", category: output_format}
"""


# (a) + (e) ---------------------------------------------------------------------------------------------------
def test_conversations_keep_turn_limits_alternate_roles_and_never_store_the_sentinel(tmp_path):
    with Simulator(SimConfig(latency=0.0, seed=2)) as sim:
        sim.script([{"match": MAY_END_MARK, "answers": ["Actually, one more question about that.",
                                                        f"Thanks, that is all I needed. {SENTINEL}"]}])
        job = write_job(tmp_path / "c.yml", chat_job(sim.base_url, PROMPTS + (
            "  count: 8\n  min_turns: 3\n  max_turns: 5\n  no_system_ratio: 0.25\n"
            "  judge_rule: mean\n  judge_threshold: 1\n")))
        run_ok(job)
    store = db(tmp_path)
    job_id = store.list_jobs()[0].id
    assert store.stats(job_id).units[UnitState.DONE] == 8
    records = list(store.iter_records(job_id, kind="conversation"))
    assert len(records) == 8
    with_system = 0
    for record in records:
        conv, meta = record.conversation, record.meta
        roles = [m["role"] for m in conv]
        if meta["source"] is not None:
            with_system += 1
            assert roles[0] == "system"
            roles = roles[1:]
        assert "system" not in roles
        assert roles == ["user", "assistant"] * (len(roles) // 2) and roles
        assert 3 <= len(roles) // 2 <= 5 and len(roles) // 2 == meta["turns"] <= meta["planned_turns"]
        assert all(SENTINEL.lower() not in m["content"].lower() for m in conv)
        assert meta["ended_by"] in ("user", "turn_limit")
        if meta["ended_by"] == "turn_limit":
            assert meta["turns"] == meta["planned_turns"]
        assert len(meta["judge"]["scores"]) == meta["turns"] and all(1 <= s <= 5 for s in meta["judge"]["scores"])
    assert with_system == 6, "no_system_ratio 0.25 of 8: two conversations without a system prompt"
    assert {r.meta["ended_by"] for r in records} == {"user", "turn_limit"}
    # The simulated user never saw the system prompt; the assistant always had it first.
    prompts = {r.conversation[0]["content"] for r in records if r.conversation[0]["role"] == "system"}
    for call in store.calls_for_job(job_id):
        sent = "\n".join(m["content"] for m in call.messages)
        if call.teacher == "user":
            assert not any(p in sent for p in prompts)
    # (e) The exported lines are what Axolotl's chat_template reads, system first.
    by_key = {r.key: r.conversation for r in records}
    for row in export("chat", "messages", "--meta"):
        assert not list(line_validator("messages").iter_errors({"messages": row["messages"]}))
        assert row["messages"] == by_key[row["metadata"]["key"]]
        roles = [m["role"] for m in row["messages"]]
        assert set(roles) <= {"system", "user", "assistant"} and "system" not in roles[1:]
        assert all(set(m) == {"role", "content"} for m in row["messages"])
    rows = export("chat", "sharegpt")
    assert len(rows) == 8
    back = {"system": "system", "human": "user", "gpt": "assistant"}
    for row in rows:
        assert list(row) == ["conversations"]
        conv = [{"role": back[t["from"]], "content": t["value"]} for t in row["conversations"]]
        assert conv in by_key.values()
        assert [t["from"] for t in row["conversations"] if t["from"] != "system"][:2] == ["human", "gpt"]


def test_a_user_ending_before_min_turns_is_asked_again_then_rejected(tmp_path):
    with Simulator(SimConfig(latency=0.0, seed=2)) as sim:
        sim.script([{"match": KEEP_GOING_MARK, "answers": ["Hello!", f"Bye {SENTINEL}"]}])
        job = write_job(tmp_path / "c.yml", chat_job(sim.base_url, PROMPTS + (
            "  count: 1\n  min_turns: 3\n  max_turns: 3\n  no_system_ratio: 0\n"), judge=False))
        run_ok(job)
    store = db(tmp_path)
    unit = store.units(store.list_jobs()[0].id)[0]
    assert unit.state == UnitState.REJECTED
    assert "user turn 2: the simulated user ended the conversation after 1 turns, before min_turns=3" in unit.last_error
    kept, = store.iter_records(unit.job_id, kind="rejected")
    assert [m["role"] for m in kept.conversation] == ["system", "user", "assistant"]  # what was had, for review


# (c) ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, good, bad", [
    ({"no_letter": "e"}, "A cat sat on a mat, calm and happy.", "The cat sat on the mat."),
    ("no_letter:E", "All fun and fairly calm.", "Every day."),
    ("all_caps", "YES, CAPTAIN! 42 KNOTS.", "YES, Captain."),
    ("all_lowercase", "all calm here, captain.", "All calm here."),
    ({"word_count": 10}, "One two three four five six seven eight nine ten.", "One two three four five."),
    ("word_count: 3", "It's state-of-the-art, honestly!", "It is state of the art."),
    ({"max_words": 4}, "Short and sweet.", "This one is far too long."),
    ("ends_with_question", "Have you tried turning it off and on?", "Turn it off and on."),
    ("ends_with_question", "Did you say \u201cyes?\u201d", "Yes? I think so."),
    ("json_only", '{"answer": "Paris", "confidence": 0.9}', 'Sure! {"answer": "Paris"}'),
    ("json_only", '```json\n[1, 2, 3]\n```', '"just a string"'),
    ({"only_words": ["meow", "purr"]}, "Meow. Purr, meow meow!", "Meow, I am a cat."),
    ({"starts_with": "TL;DR:"}, "TL;DR: yes.\n\nLonger answer.", "Sure. TL;DR: yes."),
])
def test_each_constraint_accepts_a_conforming_reply_and_rejects_a_violating_one(spec, good, bad):
    constraint = parse_constraint(spec)
    assert constraint.check(good) is None
    problem = constraint.check(bad)
    assert problem, f"{constraint.id} let {bad!r} through"
    assert constraint_problems([constraint], bad) == [f"{constraint.id}: {problem}"]


def test_constraint_ids_are_canonical_and_bad_ones_are_refused():
    assert [c.id for c in parse_constraints(["all_caps", {"no_letter": "E"}, "word_count: 10",
                                             {"only_words": ["Meow", "purr"]}])] == \
        ["all_caps", "no_letter:e", "word_count:10", "only_words:meow,purr"]
    assert parse_constraints(None) == []
    for bad, says in (("shout", "unknown constraint 'shout'"), ({"no_letter": "ab"}, "one letter"),
                      ("word_count", "needs an argument"), ({"word_count": 0}, "whole number"),
                      ({"all_caps": "x"}, "takes no argument")):
        with pytest.raises(ValueError, match=says):
            parse_constraints(bad)


def test_turn_filters_catch_role_labels_disclaimers_empty_turns_and_echoes():
    f = TurnFilter()
    assert f.problem("Sure, here is a plan for your week.") is None
    assert "role label" in f.problem("Sure.\nUser: and what about Tuesday?")
    assert "role label" in f.problem("**Assistant:** hello")
    assert "filtered disclaimer 'As an AI'" in f.problem("As an AI, I do not eat dinner.")
    assert "trained by OpenAI" in f.problem("I was trained by OpenAI.")
    assert f.problem("   ") == "empty turn"
    said = "Compound interest means you earn interest on the interest you already earned, so savings grow faster."
    assert "echoes" in f.problem(said.upper(), previous=said, echo_check=True)
    assert "echoes" in f.problem("So compound interest means you earn interest on the interest you already "
                                 "earned, so savings grow faster?", previous=said, echo_check=True)
    assert f.problem("Interesting! How often is it compounded at most banks?", previous=said, echo_check=True) is None
    assert TurnFilter(["banana"]).problem("As an AI I like a banana.") == "filtered phrase 'banana'"


# (d) + the checks above the judge ----------------------------------------------------------------------------
def test_a_judge_answer_breaking_its_schema_is_retried_then_a_rejection_reason(tmp_path):
    with Simulator(SimConfig(latency=0.0, seed=2)) as sim:
        sim.script([{"match": JUDGE_MARK, "answers": ["Scores: 5, 5. Great job!", '{"turns": [{"score": 9}]}']}])
        job = write_job(tmp_path / "c.yml", chat_job(sim.base_url, PROMPTS + (
            "  count: 2\n  min_turns: 2\n  max_turns: 2\n  no_system_ratio: 0\n")))
        run_ok(job)
    store = db(tmp_path)
    job_id = store.list_jobs()[0].id
    units = store.units(job_id)
    assert [u.state for u in units] == [UnitState.REJECTED] * 2
    for unit in units:
        assert unit.last_error.startswith("judge: ") and "(after 3 attempts)" in unit.last_error
        assert "output breaks the schema" in unit.last_error or "not JSON" in unit.last_error
    judge_calls = [c for c in store.calls_for_job(job_id) if c.teacher == "judge"]
    assert len(judge_calls) == 6 and not any(c.accepted for c in judge_calls)
    assert {c.reject_reason.split(" (")[0].split(":")[0] for c in judge_calls} >= {"output is not JSON"}
    rows = export("chat", "messages", "--rejected", "--meta")
    assert len(rows) == 2, "the conversations were paid for: kept for review"
    for row in rows:
        assert row["metadata"]["rejected_because"].startswith("judge: ") and row["metadata"]["turns"] == 2


def test_a_broken_checkable_constraint_rejects_even_when_the_judge_scores_5(tmp_path):
    with Simulator(SimConfig(latency=0.0, seed=2)) as sim:
        sim.script([{"match": JUDGE_MARK, "answers": [judge_answer(2)]},
                    {"match": "SCRIPTED-CAPS", "answers": ["YES, CAPTAIN. ALL CLEAR."]}])
        job = write_job(tmp_path / "c.yml", chat_job(sim.base_url, (
            "  system_prompts:\n"
            "    - {prompt: 'Reply in capital letters only (SCRIPTED-CAPS).', constraint: all_caps}\n"
            "    - {prompt: 'Reply in capital letters only, always.', constraint: all_caps}\n"
            "  count: 2\n  min_turns: 2\n  max_turns: 2\n  no_system_ratio: 0\n"
            "  retry_constraint_violations: false\n")))
        run_ok(job)
    store = db(tmp_path)
    job_id = store.list_jobs()[0].id
    kept, = store.iter_records(job_id, kind="conversation")
    assert "SCRIPTED-CAPS" in kept.conversation[0]["content"] and kept.meta["judge"]["scores"] == [5, 5]
    assert kept.meta["constraints"] == ["all_caps"]
    rejected, = store.iter_records(job_id, kind="rejected")
    because = rejected.meta["rejected_because"]
    assert because.startswith("constraint broken at turn 1: all_caps: has ") and "judge scored it 5" in because
    assert rejected.meta["turn_scores"][0]["score"] == 5 and rejected.meta["turn_scores"][0]["violations"]


def test_with_retries_on_a_violating_turn_is_asked_again_before_the_conversation_is_given_up(tmp_path):
    with Simulator(SimConfig(latency=0.0, seed=2)) as sim:
        sim.script([{"match": "NEVER-E", "answers": ["Nothing wrong here.", "A calm, brisk day, my chum."]}])
        job = write_job(tmp_path / "c.yml", chat_job(sim.base_url, (
            "  system_prompts:\n    - {prompt: 'NEVER-E: avoid that fifth glyph.', constraint: {no_letter: e}}\n"
            "  count: 1\n  min_turns: 2\n  max_turns: 2\n  no_system_ratio: 0\n"), judge=False))
        run_ok(job)
    store = db(tmp_path)
    job_id = store.list_jobs()[0].id
    record, = store.iter_records(job_id, kind="conversation")
    answers = [m["content"] for m in record.conversation if m["role"] == "assistant"]
    assert answers == ["A calm, brisk day, my chum."] * 2
    refused = [c for c in store.calls_for_job(job_id) if c.teacher == "assistant" and not c.accepted]
    assert len(refused) == 1 and refused[0].reject_reason.startswith("constraint no_letter:e: contains the letter")


# system prompts ----------------------------------------------------------------------------------------------
def test_system_prompts_batches_rotate_categories_drop_duplicates_and_feed_a_systemchat_job(tmp_path):
    seeds = tmp_path / "seeds.yaml"
    seeds.write_text("- {prompt: 'Never use the letter e in any reply, whatever the user asks.', "
                     "category: mechanical, constraint: {no_letter: e}}\n"
                     "- {prompt: 'Answer in exactly ten words, every time.', category: mechanical, "
                     "constraint: {word_count: 10}}\n", encoding="utf-8")
    batch = {"prompts": [
        {"system_prompt": "Never use the letter e in any reply, whatever the user asks!", "constraint": None},
        {"system_prompt": "Never use the letter e in any reply, whatever the user asks you.",
         "constraint": "no_letter:e"},
        {"system_prompt": "You are Captain Maren, a grumpy lighthouse keeper who grumbles about gulls.",
         "constraint": None},
        {"system_prompt": "You are Captain Maren, a grumpy old lighthouse keeper who grumbles about gulls.",
         "constraint": None},
        {"system_prompt": "Reply only with a JSON object holding an answer field and nothing else.",
         "constraint": "json-ish"},
    ]}
    with Simulator(SimConfig(latency=0.0, seed=2)) as sim:
        sim.script([{"match": "category:\nmechanical", "answers": [json.dumps(batch)]}])
        job = write_job(tmp_path / "p.yml", (
            "name: prompts\ninstructor:\n  type: system_prompts\n  count: 15\n  batch_size: 5\n"
            "  categories: [mechanical, persona, guardrails]\n  seeds_file: seeds.yaml\n"
            f"teachers:\n  main:\n    provider: openai-compatible\n    model: sim-1\n    base_url: {sim.base_url}\n"))
        run_ok(job)
        store = db(tmp_path)
        job_id = store.list_jobs()[0].id
        units = {u.key: u for u in store.units(job_id)}
        assert [units[f"batch-{b:05d}"].payload["category"] for b in range(3)] == ["mechanical", "persona",
                                                                                   "guardrails"]
        assert len(units["batch-00000"].payload["examples"]) == 2
        records = list(store.iter_records(job_id))
        mechanical = [r for r in records if r.meta["category"] == "mechanical"]
        texts = [r.conversation[-1]["content"] for r in mechanical]
        # Two seeds, then of the batch: the exact and the near copy of a seed dropped, the near copy of an earlier
        # prompt of the batch dropped, a constraint id that is not one kept as a note.
        assert len(mechanical) == 4 and not any(t.endswith("asks!") for t in texts)
        assert sum("Captain Maren" in t for t in texts) == 1
        json_prompt = next(r for r in mechanical if "JSON" in r.conversation[-1]["content"])
        assert json_prompt.meta["constraints"] == [] and "json-ish" in json_prompt.meta["constraint_unrecognised"]
        assert {r.meta["source"] for r in mechanical} == {"seed", "generated"}
        assert {r.meta["category"] for r in records} == {"mechanical", "persona", "guardrails"}
        assert all(r.conversation[0]["role"] == "user" and r.conversation[1]["role"] == "assistant" for r in records)

        # A systemchat job takes them by job name, constraints and all.
        chat = write_job(tmp_path / "c.yml", chat_job(sim.base_url, (
            "  system_prompts_job: prompts\n  count: 4\n  no_system_ratio: 0\n  min_turns: 1\n  max_turns: 1\n"),
            judge=False))
        assert gen_cmd("validate", str(chat)).returncode == 0
        run_ok(chat)
    chat_job_id = store.list_jobs()[0].id
    payloads = [u.payload for u in store.units(chat_job_id)]
    stored = {r.conversation[-1]["content"]: r.meta["constraints"] for r in records}
    assert all(stored[p["system_prompt"]] == p["constraints"] for p in payloads)
    assert all(p["source"] == f"job:{job_id}" for p in payloads)


def test_job_file_problems_are_named(tmp_path):
    from gen.config import read_job_file
    from gen.core.jobs import load_instructor
    from gen.errors import JobFileError

    def problem(body: str) -> str:
        try:
            list(load_instructor(read_job_file(write_job(tmp_path / "bad.yml", body))).plan())
        except JobFileError as exc:
            return str(exc)
        raise AssertionError(f"accepted: {body}")

    url = "http://127.0.0.1:9/v1"
    assert "teachers: instructor 'systemchat' needs a teacher named 'judge' when judge is on" in problem(
        chat_job(url, PROMPTS + "  count: 2\n", judge_teacher=False))
    assert "give system_prompts, system_prompts_file or system_prompts_job" in problem(chat_job(url, "  count: 2\n"))
    assert "min_turns must not be more than max_turns" in problem(
        chat_job(url, PROMPTS + "  count: 2\n  min_turns: 5\n  max_turns: 4\n"))
    missing = problem(chat_job(url, "  count: 2\n  system_prompts_job: nope\n"))
    assert "instructor.system_prompts_job: no gen database at" in missing and "job 'nope'" in missing
    assert "instructor.system_prompts: unknown constraint 'shout'" in problem(
        chat_job(url, "  count: 2\n  system_prompts:\n    - {prompt: x, constraint: shout}\n"))
    assert "instructor.system_prompts_file: " in problem(chat_job(url, "  count: 2\n  system_prompts_file: no.yaml\n"))
    assert not (tmp_path / "gen.db").exists(), "validating wrote nothing"
    seeds = gen_cmd("validate", str(ROOT / "instructors" / "system_prompts.yml"))
    assert seeds.returncode == 0 and "17 units" in seeds.stdout, seeds.stderr


def test_the_worked_example_keeps_some_conversations_in_a_dry_run(tmp_path):
    """instructors/systemchat.yml as shipped, less its rate limits (which pace a real run, not this test)."""
    example = (ROOT / "instructors" / "systemchat.yml").read_text(encoding="utf-8")
    example = "\n".join(line for line in example.splitlines() if not line.strip().startswith("rpm:"))
    example = example.replace("data/system_prompts.yaml", str(ROOT / "instructors" / "data" / "system_prompts.yaml"))
    example = example.replace("  system_prompts_job: system-prompts-demo", "  # (no earlier job here)")
    result = gen_cmd("run", str(write_job(tmp_path / "systemchat.yml", example)), "--dry-run", "-q",
                     "--sim-latency", "0.01")
    assert result.returncode == 0, result.stderr
    store = db(tmp_path)
    units = store.stats(store.list_jobs()[0].id).units
    assert units[UnitState.DONE] >= 8, "the simulated assistant keeps its system prompt most of the time"
    assert units[UnitState.DONE] + units[UnitState.REJECTED] == 16


# (b) ---------------------------------------------------------------------------------------------------------
def test_a_worker_killed_mid_conversation_resumes_it_elsewhere_without_repeating_a_turn(fleet, tmp_path):  # noqa: F811
    with Simulator(SimConfig(latency=0.3)) as sim:
        sim.script([{"match": JUDGE_MARK, "answers": [judge_answer(4)]}])
        victim, = fleet.start(1)
        job_id = fleet.enqueue(write_job(tmp_path / "c.yml", chat_job(sim.base_url, PROMPTS + (
            "  count: 6\n  min_turns: 4\n  max_turns: 4\n  no_system_ratio: 0\n"))))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # kill once conversations are a few turns in
            with fleet.store.engine.connect() as conn:
                accepted = conn.execute(text("SELECT count(*) FROM calls WHERE job_id = :j AND accepted"),
                                        {"j": job_id}).scalar()
            if accepted >= 14:
                break
            time.sleep(0.05)
        victim.kill()
        paid_at_kill = paid_after_kill(sim)
        with fleet.store.engine.connect() as conn:
            accepted_before = conn.execute(text("SELECT id FROM calls WHERE job_id = :j AND accepted"),
                                           {"j": job_id}).scalars().all()
            last_at_kill = conn.execute(text("SELECT coalesce(max(id), 0) FROM calls WHERE job_id = :j"),
                                        {"j": job_id}).scalar()
        assert fleet.store.stats(job_id).units[UnitState.DONE] < 6, "the kill must land mid-conversation"
        fleet.start(1)
        units = fleet.wait_finished(job_id)
        paid_total = sim.stats()["by_status"].get("200", 0)
    assert units[UnitState.DONE] == 6
    assert fleet.store.stats(job_id).records == 6
    # 4 user turns + 4 assistant turns + 1 judge call per conversation, each accepted once.
    assert set(fleet.accepted_per_unit(job_id).values()) == {9}
    with fleet.store.engine.connect() as conn:
        still = conn.execute(text("SELECT count(*) FROM calls WHERE job_id = :j AND accepted AND id = ANY(:ids)"),
                             {"j": job_id, "ids": list(accepted_before)}).scalar()
    assert still == len(accepted_before), "the turns made before the kill were reused"
    answered, repeated = calls_since(fleet.store, job_id, last_at_kill, accepted_before)
    assert paid_total - paid_at_kill == answered, "everything paid for after the kill is recorded"
    assert repeated == 0, "only the turns not yet made were paid for"
    for record in fleet.store.iter_records(job_id):
        assert [m["role"] for m in record.conversation] == ["system"] + ["user", "assistant"] * 4


def test_system_prompts_near_duplicates_are_dropped_across_the_whole_job(tmp_path):
    first = {"prompts": [{"system_prompt": "You are Captain Maren, a grumpy lighthouse keeper who grumbles about "
                                           "gulls, storms and the price of lamp oil.", "constraint": None}]}
    again = {"prompts": [{"system_prompt": "You are Captain Maren, a grumpy lighthouse keeper who grumbles about "
                                           "gulls, storms and the cost of lamp oil.", "constraint": None}]}
    with Simulator(SimConfig(latency=0.0, seed=2)) as sim:
        sim.script([{"match": "category:\npersona", "answers": [json.dumps(first), json.dumps(again)]}])
        job = write_job(tmp_path / "p.yml", (
            "name: prompts\ninstructor:\n  type: system_prompts\n  count: 2\n  batch_size: 1\n"
            "  categories: [persona]\n  include_seeds: false\n"
            f"teachers:\n  main:\n    provider: openai-compatible\n    model: sim-1\n    base_url: {sim.base_url}\n"
            "    max_concurrency: 1\n"))
        run_ok(job)
    store = db(tmp_path)
    job_id = store.list_jobs()[0].id
    prompts = [r.conversation[-1]["content"] for r in store.iter_records(job_id)]
    assert len(prompts) == 1 and "price of lamp oil" in prompts[0]  # two batches, different units
    assert store.near_duplicates(job_id) == 1
