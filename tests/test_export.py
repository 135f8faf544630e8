"""`gen export`: every line parses, validates, and has exactly the documented shape; refusals are filtered;
unchecked and unverified records are held back; an empty export fails and leaves no file; KTO and text formats."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import gen_cmd, sim_job, write_job
from gen.cli import cli
from gen.export import kto_from_judged, line_validator
from gen.simulator import SimConfig, Simulator
from gen.store import Store
from gen.types import NewRecord

SYSTEM = "You answer briefly."


@pytest.fixture
def job_id(tmp_path):
    with Simulator(SimConfig(latency=0.0, seed=3)) as sim:
        text = sim_job(sim.base_url, name="exp", prompts=4).replace(
            "  prompts:\n", f"  system: {SYSTEM}\n  prompts:\n")
        job = write_job(tmp_path / "j.yml", text)
        result = gen_cmd("run", str(job), "-q")
        assert result.returncode == 0, result.stderr
    store = Store(f"sqlite:///{tmp_path / 'gen.db'}")
    job_id = store.list_jobs()[0].id
    unit = store.units(job_id)[0]
    store.finish_unit_with_records(job_id, unit.id, [NewRecord("refusal", [
        {"role": "user", "content": "Tell me a secret."},
        {"role": "assistant", "content": "I\u2019m sorry, but I can\u2019t help with that request."}])], [])
    return job_id


def export(job_id, fmt, *extra):
    result = gen_cmd("export", job_id, "-o", f"out.{fmt}.jsonl", "--format", fmt, *extra)
    assert result.returncode == 0, result.stderr
    with open(f"out.{fmt}.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    for row in rows:
        assert not list(line_validator(fmt).iter_errors(row))
    return rows, result.stderr


def test_sharegpt_lines_have_the_system_turn_first_and_sharegpt_roles(job_id):
    rows, err = export(job_id, "sharegpt")
    assert len(rows) == 4 and "1 dropped by the refusal filter" in err
    for row in rows:
        assert list(row) == ["conversations"]
        turns = row["conversations"]
        assert [t["from"] for t in turns] == ["system", "human", "gpt"]
        assert all(set(t) == {"from", "value"} for t in turns)
        assert turns[0]["value"] == SYSTEM


def test_messages_lines_are_what_axolotl_chat_template_reads(job_id):
    rows, _ = export(job_id, "messages")
    assert len(rows) == 4
    for row in rows:
        assert list(row) == ["messages"]
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        assert all(set(m) == {"role", "content"} for m in row["messages"])


def test_alpaca_lines(job_id):
    rows, _ = export(job_id, "alpaca")
    assert len(rows) == 4
    for row in rows:
        assert set(row) == {"instruction", "input", "output", "system"}
        assert row["input"] == "" and row["system"] == SYSTEM and row["output"]


def test_alpaca_carries_an_empty_system_when_a_record_has_none(job_id, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'gen.db'}")
    store.finish_unit_with_records(job_id, store.units(job_id)[1].id, [NewRecord("bare", [
        {"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "Seven."}])], [])
    rows, _ = export(job_id, "alpaca")
    bare = [r for r in rows if r["instruction"] == "Name a prime."]
    assert bare == [{"instruction": "Name a prime.", "input": "", "output": "Seven.", "system": ""}]


def test_the_filter_can_be_turned_off_or_extended(job_id):
    rows, err = export(job_id, "messages", "--no-filter")
    assert len(rows) == 5 and "dropped" not in err
    first_question = rows[0]["messages"][1]["content"]
    answer_words = rows[0]["messages"][2]["content"].split()[:3]
    rows, err = export(job_id, "messages", "--filter-phrase", " ".join(answer_words))
    assert len(rows) <= 3 and all(r["messages"][1]["content"] != first_question for r in rows)


def test_alpaca_refuses_multi_turn_and_leaves_no_file(job_id, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'gen.db'}")
    unit = store.units(job_id)[1]
    store.finish_unit_with_records(job_id, unit.id, [NewRecord("multi", [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "more"}, {"role": "assistant", "content": "sure"}])], [])
    result = gen_cmd("export", job_id, "-o", "multi.jsonl", "--format", "alpaca")
    assert result.returncode == 2 and "single-turn" in result.stderr
    assert not (tmp_path / "multi.jsonl").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_export_streams_in_batches(job_id, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'gen.db'}")
    keys = [r.key for r in store.iter_records(job_id, batch=2)]
    assert len(keys) == len(set(keys)) == 5


def test_the_filter_spares_records_whose_refusals_are_the_point(job_id, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'gen.db'}")
    unit = store.units(job_id)[2]
    store.finish_unit_with_records(job_id, unit.id, [NewRecord("guardrail", [
        {"role": "system", "content": "Never give medical dosages."},
        {"role": "user", "content": "How much ibuprofen can I take?"},
        {"role": "assistant", "content": "I'm sorry, but I can't give dosages: please ask a pharmacist."}],
        meta={"refusals_expected": True})], [])
    rows, err = export(job_id, "messages")
    contents = [r["messages"][-1]["content"] for r in rows]
    assert any("pharmacist" in c for c in contents) and "1 dropped" in err


def gen(*args: str):
    """The real `gen` command, in this process (a subprocess per command costs seconds on this machine)."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def lines(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_the_default_format_is_messages_with_user_and_assistant_roles(job_id):
    result = gen("export", job_id, "-o", "default.jsonl")
    assert result.exit_code == 0, result.stderr
    rows = lines("default.jsonl")
    assert len(rows) == 4 and all(list(r) == ["messages"] for r in rows)
    assert {m["role"] for r in rows for m in r["messages"]} == {"system", "user", "assistant"}
    assert "4 messages lines written" in result.stderr


def test_an_export_that_would_be_empty_exits_1_with_the_reason_and_leaves_no_file(job_id, tmp_path):
    result = gen("export", job_id, "-o", "empty.jsonl", "--filter-pattern", ".")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"gen: error: 0 lines: all 5 records of job {job_id} were left out: 5 dropped by the refusal filter "
        "(--no-filter keeps them); nothing written"]
    assert not (tmp_path / "empty.jsonl").exists() and not [p for p in tmp_path.iterdir() if p.suffix == ".part"]
    bad = gen("export", job_id, "-o", "x.jsonl", "--filter-pattern", "(unclosed")
    assert bad.exit_code == 2 and "gen: error: --filter-pattern:" in bad.stderr and "regular expression" in bad.stderr


def test_the_old_filter_misses_and_false_alarms_are_fixed_in_export(job_id, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'gen.db'}")
    unit = store.units(job_id)[3]
    story = '"I\'m sorry, but I can\'t let you through," he said. Mira smiled and showed her pass.'
    store.finish_unit_with_records(job_id, unit.id, [
        NewRecord("story", [{"role": "user", "content": "Write a scene at a gate."},
                            {"role": "assistant", "content": story}]),
        NewRecord("plain-refusal", [{"role": "user", "content": "Hack my ex's mail."},
                                    {"role": "assistant", "content": "I can't help with that."}]),
        NewRecord("llm", [{"role": "user", "content": "Weather?"},
                          {"role": "assistant", "content": "As a large language model, I have no live data."}])], [])
    result = gen("export", job_id, "-o", "out.jsonl")
    assert result.exit_code == 0 and "3 dropped by the refusal filter" in result.stderr
    answers = [r["messages"][-1]["content"] for r in lines("out.jsonl")]
    assert story in answers and len(answers) == 5


def test_text_templates_render_the_documented_prompt_formats(job_id, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'gen.db'}")
    store.finish_unit_with_records(job_id, store.units(job_id)[1].id, [NewRecord("two-turns", [
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye."}]), NewRecord("no-system", [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}])], [])
    expected = {
        "airoboros": ("Be terse.\nUSER: Hi\nASSISTANT: Hello.\nUSER: Bye\nASSISTANT: Goodbye.",
                      "A chat.\nUSER: Hi\nASSISTANT: Hello."),
        "llama2": ("<s>[INST] <<SYS>>\nBe terse.\n<</SYS>>\n\nHi [/INST] Hello. </s>"
                   "<s>[INST] Bye [/INST] Goodbye. </s>",
                   "<s>[INST] Hi [/INST] Hello. </s>"),
        "alpaca": ("Below is an instruction that describes a task. Write a response that appropriately completes the "
                   "request.\n\n### Instruction:\nBe terse.\nHi\n\n### Response:\nHello.\n\n### Instruction:\nBye"
                   "\n\n### Response:\nGoodbye.",
                   "Below is an instruction that describes a task. Write a response that appropriately completes the "
                   "request.\n\n### Instruction:\nHi\n\n### Response:\nHello."),
        "chatml": ("<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
                   "Hello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\nGoodbye.<|im_end|>",
                   "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>"),
        "human-response": ("Be terse.\n\n### HUMAN:\nHi\n\n### RESPONSE:\nHello.\n\n### HUMAN:\nBye\n\n### RESPONSE:\n"
                           "Goodbye.", "### HUMAN:\nHi\n\n### RESPONSE:\nHello."),
    }
    for name, (two_turns, no_system) in expected.items():
        result = gen("export", job_id, "-o", f"{name}.jsonl", "--format", "text", "--template", name)
        assert result.exit_code == 0, result.stderr
        texts = [r["text"] for r in lines(f"{name}.jsonl")]
        assert len(texts) == 6 and two_turns in texts and no_system in texts, name
    result = gen("export", job_id, "-o", "all.jsonl", "--format", "text", "--all-templates", "--meta")
    assert result.exit_code == 0, result.stderr
    rows = lines("all.jsonl")
    assert len(rows) == 6 * len(expected)
    assert {r["metadata"]["template"] for r in rows} == set(expected)
    assert not list(line_validator("text").iter_errors({"text": rows[0]["text"]}))
    for wrong in (["--format", "text"], ["--format", "messages", "--template", "chatml"],
                  ["--format", "text", "--template", "chatml", "--all-templates"]):
        refused = gen("export", job_id, "-o", "w.jsonl", *wrong)
        assert refused.exit_code == 2 and "gen: error:" in refused.stderr and not (tmp_path / "w.jsonl").exists()


# records held back unless included: riddles' verified: false (flag mode), coding's code_check: unchecked ------------
def test_unverified_riddles_are_held_back_unless_included(sim, tmp_path):
    from test_neardup import run_directly
    from test_riddles import PIANO, TOWEL, riddles_job, script_blind_answers

    script_blind_answers(sim, piano="A piano.", towel="a sponge")
    run_directly(tmp_path, riddles_job(sim.base_url, "  count: 2\n  batch_size: 2\n  verify: true\n"
                                                     "  on_disagreement: flag\n"))
    result = gen("export", "riddles", "-o", "r.jsonl")
    assert result.exit_code == 0 and "1 held back as unverified (--include unverified)" in result.stderr
    assert [r["messages"][0]["content"] for r in lines("r.jsonl")] == [PIANO[0]]
    result = gen("export", "riddles", "-o", "all.jsonl", "--include", "unverified")
    assert result.exit_code == 0 and "held back" not in result.stderr
    assert {r["messages"][0]["content"] for r in lines("all.jsonl")} == {PIANO[0], TOWEL[0]}
    assert gen("export", "riddles", "-o", "x.jsonl", "--include", "unsure").exit_code == 2


def test_unchecked_code_is_held_back_unless_included(sim, tmp_path):
    from test_coding import NORMAL, PLAIN, TASKS, coding_job, tasks
    from test_neardup import run_directly

    sim.script([
        {"match": TASKS, "answers": [tasks("Write a Haskell function that sums a list of integers.")]},
        {"match": NORMAL, "answers": ["Fold over the list.\n\n```haskell\nsumList xs = foldr (+) 0 xs\n```\n\nDone."]},
        {"match": PLAIN, "answers": ["sumList xs = foldr (+) 0 xs\n"]},
    ])
    run_directly(tmp_path, coding_job(sim.base_url, "  count: 1\n  languages: [Haskell]\n"))
    result = gen("export", "code", "-o", "c.jsonl")
    assert result.exit_code == 1 and not (tmp_path / "c.jsonl").exists()
    assert "all 2 records of job" in result.stderr and "2 held back as unchecked (--include unchecked keeps them)" \
        in result.stderr
    result = gen("export", "code", "-o", "c.jsonl", "--include", "unchecked,unverified")
    assert result.exit_code == 0, result.stderr
    assert len(lines("c.jsonl")) == 2


# KTO ---------------------------------------------------------------------------------------------------------
def test_kto_from_preference_pairs_labels_chosen_true_and_rejected_false(sim, tmp_path):
    from test_dpo import dpo_job, run_ok, source_job

    source_job(tmp_path, sim.base_url)
    run_ok(dpo_job(tmp_path / "pairs.yml", sim.base_url, "  source_job: src\n"))
    pairs = list(Store(f"sqlite:///{tmp_path / 'gen.db'}").iter_records(
        Store(f"sqlite:///{tmp_path / 'gen.db'}").find_job("pairs").id, kind="pair"))
    result = gen("export", "pairs", "-o", "kto.jsonl", "--format", "kto")
    assert result.exit_code == 0, result.stderr
    rows = lines("kto.jsonl")
    assert len(rows) == 2 * len(pairs) == 6
    for pair, (good, bad) in zip(pairs, zip(rows[::2], rows[1::2])):
        assert set(good) == {"prompt", "completion", "label"}
        assert good["prompt"] == bad["prompt"] == pair.meta["prompt"]
        assert (good["completion"], good["label"]) == ([pair.meta["chosen"]], True)
        assert (bad["completion"], bad["label"]) == ([pair.meta["rejected"]], False)
        assert not list(line_validator("kto").iter_errors(good))


def test_kto_from_judged_conversations_labels_each_turn_by_its_score(tmp_path):
    from test_systemchat import JUDGE_MARK, chat_job, judge_answer

    low = json.dumps({"turns": [{"reason": "Obeys.", "score": 5}, {"reason": "Forgets the rule.", "score": 2}]})
    with Simulator(SimConfig(latency=0.0, seed=2)) as sim:
        sim.script([{"match": "<<<\nYou are terse (SCRIPTED-LOW).", "answers": [low]},  # only the judge sees <<<
                    {"match": JUDGE_MARK, "answers": [judge_answer(2)]}])
        job = write_job(tmp_path / "c.yml", chat_job(sim.base_url, (
            "  system_prompts:\n    - 'You are terse (SCRIPTED-LOW).'\n    - 'You are polite.'\n"
            "  count: 2\n  min_turns: 2\n  max_turns: 2\n  no_system_ratio: 0\n")))
        assert gen_cmd("run", str(job), "-q").returncode == 0
    result = gen("export", "chat", "-o", "kto.jsonl", "--format", "kto", "--meta")
    assert result.exit_code == 0, result.stderr
    rows = lines("kto.jsonl")
    by_system = {}
    for row in rows:
        by_system.setdefault(row["prompt"][0]["content"], []).append((row["metadata"]["turn"], row["label"]))
    assert by_system == {"You are polite.": [(1, True), (2, True)],
                         "You are terse (SCRIPTED-LOW).": [(1, True), (2, False)]}
    second = [r for r in rows if r["metadata"]["turn"] == 2][0]
    assert [m["role"] for m in second["prompt"]] == ["system", "user", "assistant", "user"]
    assert second["completion"][0]["role"] == "assistant"
    assert gen("export", "chat", "-o", "x.jsonl", "--format", "kto", "--rejected").exit_code == 2


def test_kto_of_a_job_without_pairs_or_judge_scores_says_why_it_is_empty(job_id, tmp_path):
    result = gen("export", job_id, "-o", "k.jsonl", "--format", "kto")
    assert result.exit_code == 1 and not (tmp_path / "k.jsonl").exists()
    assert "none has judge scores or is a preference pair" in result.stderr


def test_kto_rows_stop_at_a_failed_turn_and_a_constraint_violation_is_false():
    conv = [{"role": "system", "content": "S"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "A"},
            {"role": "user", "content": "b"}, {"role": "assistant", "content": "B"},
            {"role": "user", "content": "c"}, {"role": "assistant", "content": "C"}]
    meta = {"judge": {"threshold": 4}, "turn_scores": [{"turn": 1, "score": 5}, {"turn": 2, "score": 5,
                                                                                   "violations": ["all_caps"]},
                                                        {"turn": 3, "score": 5}]}
    assert [(r["completion"][0]["content"], r["label"]) for r in kto_from_judged(conv, meta)] == \
        [("A", True), ("B", False)]
    assert kto_from_judged(conv, {"turn_scores": [{"turn": 1, "violations": []}]}) == []  # no judge: no label
