"""dpo_reroll end to end (the real `gen` command, the simulator over HTTP): pairs from an earlier job's records
and from JSONL files, the judge asked twice with the answers swapped, bad source lines reported, and the three
DPO export formats."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import ROOT, gen_cmd, sim_job, write_job
from gen.cli import cli
from gen.config import read_job_file
from gen.core.jobs import load_instructor
from gen.errors import JobFileError
from gen.export import line_validator
from gen.store import Store, UnitState

SYSTEM = "You answer briefly."
INSTRUCTION = "REROLL-INSTRUCTION: answer at length, vividly, without cliches."


def store(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'gen.db'}")


def teacher(name: str, base_url: str) -> str:
    return (f"  {name}:\n    provider: openai-compatible\n    model: sim-{name}\n    base_url: {base_url}\n"
            "    timeout: 10\n")


def dpo_job(path, base_url: str, options: str, *, name: str = "pairs", judge: bool = False):
    text = (f"name: {name}\ninstructor:\n  type: dpo_reroll\n{options}teachers:\n{teacher('reroll', base_url)}"
            + (teacher("judge", base_url) if judge else ""))
    return write_job(path, text)


def gen(*args: str):
    """The real `gen` command, in this process (a subprocess per command costs seconds on this machine)."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def run_ok(job) -> str:
    result = gen("run", str(job), "-q")
    assert result.exit_code == 0, result.stderr
    return result.stderr


def plan(job) -> list:
    """A job file's planned units, as `gen validate` and `gen run` make them (JobFileError when refused)."""
    return list(load_instructor(read_job_file(job)).plan())


def source_job(tmp_path, base_url: str, *, name: str = "src", follow_ups: bool = False) -> str:
    """A finished respond job (3 prompts with a system prompt; two answers each with follow_ups); its id."""
    text = sim_job(base_url, name=name, prompts=3).replace("  prompts:\n", f"  system: {SYSTEM}\n  prompts:\n")
    if follow_ups:
        text = text.replace("teachers:\n", "  follow_ups: [\"Now say it in one word.\"]\nteachers:\n")
    run_ok(write_job(tmp_path / f"{name}.yml", text))
    return store(tmp_path).find_job(name).id


def write_jsonl(path, rows) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")


def single(question: str, answer: str) -> dict:
    return {"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}


def export(job: str, fmt: str) -> list[dict]:
    result = gen("export", job, "-o", f"{fmt}.jsonl", "--format", fmt)
    assert result.exit_code == 0, result.stderr
    with open(f"{fmt}.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    for row in rows:
        assert not list(line_validator(fmt).iter_errors(row))
    return rows


def test_a_reroll_job_makes_one_pair_per_source_record_linked_to_it(tmp_path, sim):
    src = source_job(tmp_path, sim.base_url)
    sources = {r.id: r for r in store(tmp_path).iter_records(src)}
    job = dpo_job(tmp_path / "pairs.yml", sim.base_url,
                  f"  source_job: src\n  reroll_instruction: \"{INSTRUCTION}\"\n")
    run_ok(job)
    s = store(tmp_path)
    pairs_job = s.find_job("pairs")
    pairs = list(s.iter_records(pairs_job.id, kind="pair"))
    assert len(pairs) == len(sources) == 3
    assert {p.meta["source"]["record_id"] for p in pairs} == set(sources)
    for pair in pairs:
        link = pair.meta["source"]
        original = sources[link["record_id"]].conversation
        assert link["job_id"] == src and link["job_name"] == "src" and link["turn"] == 2
        assert pair.meta["prompt"] == original[:-1] and pair.meta["rejected"] == original[-1]
        assert pair.meta["choose"] == "reroll" and pair.meta["chosen"] != pair.meta["rejected"]
        assert pair.conversation == [*original[:-1], pair.meta["chosen"]]
        assert pair.meta["chosen_teacher"]["teacher"] == "reroll" and pair.meta["rejected_teacher"]["by"] == "original"
    # The reroll teacher saw the instruction appended to the system message; the pair's prompt did not.
    for call in s.calls_for_job(pairs_job.id):
        assert call.messages[0] == {"role": "system", "content": f"{SYSTEM}\n\n{INSTRUCTION}"}
    # The same job file again resumes the job: nothing new is planned, paid for or stored.
    before = s.stats(pairs_job.id)
    run_ok(job)
    after = s.stats(pairs_job.id)
    assert (after.records, after.calls, after.total_units) == (before.records, before.calls, 3)


def test_export_formats_have_exactly_the_documented_fields_and_roles(tmp_path, sim):
    source_job(tmp_path, sim.base_url)
    run_ok(dpo_job(tmp_path / "j.yml", sim.base_url, "  source_job: src\n"))

    rows = export("pairs", "dpo-trl")
    assert len(rows) == 3
    for row in rows:
        assert list(row) == ["prompt", "chosen", "rejected"]
        assert [m["role"] for m in row["prompt"]] == ["system", "user"] and row["prompt"][0]["content"] == SYSTEM
        assert [m["role"] for m in row["chosen"]] == ["assistant"] == [m["role"] for m in row["rejected"]]
        assert all(set(m) == {"role", "content"} for m in [*row["prompt"], *row["chosen"], *row["rejected"]])

    rows = export("pairs", "dpo-axolotl")
    assert len(rows) == 3
    for row in rows:
        assert list(row) == ["messages", "chosen", "rejected"]
        assert [m["role"] for m in row["messages"]] == ["system", "user"]
        assert row["chosen"]["role"] == row["rejected"]["role"] == "assistant"
        assert set(row["chosen"]) == set(row["rejected"]) == {"role", "content"}

    rows = export("pairs", "dpo-chatml-intel")
    assert len(rows) == 3
    for row in rows:
        assert set(row) == {"system", "question", "chosen", "rejected"}
        assert row["system"] == SYSTEM and all(isinstance(v, str) and v for v in row.values())

    # Formats and record kinds that do not go together say so, and leave no file.
    wrong = gen("export", "pairs", "-o", "conv.jsonl", "--format", "sharegpt")
    assert wrong.exit_code == 2 and "no conversation records" in wrong.stderr and "dpo-trl" in wrong.stderr
    wrong = gen("export", "src", "-o", "none.jsonl", "--format", "dpo-trl")
    assert wrong.exit_code == 2 and "0 lines" in wrong.stderr and "no pair records" in wrong.stderr
    assert not (tmp_path / "conv.jsonl").exists() and not (tmp_path / "none.jsonl").exists()


def test_the_judge_sees_both_orders_and_a_pair_is_kept_only_when_both_verdicts_agree(tmp_path, sim):
    cases = {  # question -> (original, reroll, winner when the original is shown first, when the reroll is)
        "Q-AGREE-REROLL": ("ORIG-1 short.", "REROLL-1 a longer and livelier answer.", "B", "A"),
        "Q-DISAGREE": ("ORIG-2 short.", "REROLL-2 another longer answer.", "A", "A"),
        "Q-AGREE-ORIGINAL": ("ORIG-3 precise.", "REROLL-3 rambling and wrong.", "A", "B"),
        "Q-TIE": ("ORIG-4 fine.", "REROLL-4 also fine, in other words.", "tie", "A"),
    }
    write_jsonl(tmp_path / "chats.jsonl", [single(q, orig) for q, (orig, *_rest) in cases.items()])
    rules = []
    for orig, reroll, first, second in cases.values():
        rules.append({"match": f"<answer_a>\n{orig}", "answers": [json.dumps({"reasoning": "r", "winner": first})]})
        rules.append({"match": f"<answer_a>\n{reroll}", "answers": [json.dumps({"reasoning": "r", "winner": second})]})
    rules += [{"match": q, "answers": [reroll]} for q, (_o, reroll, *_w) in cases.items()]  # after the judge rules
    sim.script(rules)
    run_ok(dpo_job(tmp_path / "j.yml", sim.base_url, "  source_file: chats.jsonl\n  choose: judge\n", judge=True))

    s = store(tmp_path)
    job_id = s.find_job("pairs").id
    pairs = {p.meta["prompt"][0]["content"]: p for p in s.iter_records(job_id, kind="pair")}
    assert set(pairs) == {"Q-AGREE-REROLL", "Q-AGREE-ORIGINAL"}
    assert pairs["Q-AGREE-REROLL"].meta["chosen"]["content"].startswith("REROLL-1")
    assert pairs["Q-AGREE-ORIGINAL"].meta["chosen"]["content"] == "ORIG-3 precise."
    assert pairs["Q-AGREE-ORIGINAL"].meta["rejected_teacher"]["teacher"] == "reroll"
    for pair in pairs.values():
        orders = [(v["answer_a"], v["answer_b"]) for v in pair.meta["verdicts"]]
        assert orders == [("original", "reroll"), ("reroll", "original")]
    dropped = {r.meta["prompt"][0]["content"]: r for r in s.iter_records(job_id, kind="rejected")}
    assert set(dropped) == {"Q-DISAGREE", "Q-TIE"}
    assert "disagree" in dropped["Q-DISAGREE"].meta["rejected_because"]
    assert "tie" in dropped["Q-TIE"].meta["rejected_because"]
    assert [v["preferred"] for v in dropped["Q-DISAGREE"].meta["verdicts"]] == ["original", "reroll"]
    assert dropped["Q-DISAGREE"].meta["original"]["content"] == "ORIG-2 short."
    assert s.stats(job_id).units[UnitState.REJECTED] == 2
    # Each unit asked the judge twice: once with each answer shown first.
    judge_calls = [c for c in s.calls_for_job(job_id) if c.teacher == "judge"]
    assert len(judge_calls) == 8
    firsts = sorted(c.messages[0]["content"].split("<answer_a>\n")[1].split("-")[0] for c in judge_calls)
    assert firsts == ["ORIG"] * 4 + ["REROLL"] * 4


def test_a_malformed_source_line_is_reported_with_its_number_and_the_rest_processed(tmp_path, sim):
    write_jsonl(tmp_path / "chats.jsonl", [
        single("First question?", "First answer."),
        '{"conversations": [{"from": "human", "value": "broken',
        {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Second question?"},
                      {"role": "assistant", "content": "Second answer."}]},
        "",
        {"messages": [{"role": "user", "content": "No answer here"}]},
        single("Third question?", "Third answer."),
        single("First question?", "The same question again, answered differently."),
    ])
    result = gen_cmd("run", str(dpo_job(tmp_path / "j.yml", sim.base_url, "  source_file: chats.jsonl\n")), "-q")
    assert result.returncode == 0, result.stderr
    stderr = result.stderr  # a warning line each, at plan time
    assert "chats.jsonl line 2: not valid JSON" in stderr
    assert "chats.jsonl line 5: conversation must end with an assistant turn" in stderr
    assert "1 source turns repeat a context already planned" in stderr  # line 7 asks line 1's question again
    s = store(tmp_path)
    job_id = s.find_job("pairs").id
    pairs = list(s.iter_records(job_id, kind="pair"))
    assert sorted(p.meta["source"]["line"] for p in pairs) == [1, 3, 6]
    assert all(p.meta["source"]["file"] == "chats.jsonl" for p in pairs)
    skipped = {u.key: u for u in s.units(job_id, UnitState.REJECTED)}
    assert set(skipped) == {"skipped-line-0000002", "skipped-line-0000005"}
    assert skipped["skipped-line-0000002"].payload["skipped"]["line"] == 2
    assert "line 2 skipped: not valid JSON" in skipped["skipped-line-0000002"].last_error
    status = gen("status", "pairs")
    assert "line 5 skipped" in status.stdout
    # A file with no usable line at all is refused before anything is written.
    write_jsonl(tmp_path / "bad.jsonl", ["not json", {"messages": []}])
    with pytest.raises(JobFileError, match="instructor.source_file: no usable conversation: bad.jsonl line 1"):
        plan(dpo_job(tmp_path / "bad.yml", sim.base_url, "  source_file: bad.jsonl\n"))


def test_length_and_similarity_policies(tmp_path, sim):
    cases = {  # question -> (original, reroll)
        "Q-SAME": ("The answer is a shadow.", "the answer is a SHADOW!"),
        "Q-CLOSE": ("An answer of forty characters, give or take.",
                    "An answer of forty-four characters, more or less."),
        "Q-LONGER": ("Short.", "A much longer answer that explains itself."),
        "Q-SHORTER": ("A long original answer with plenty of helpful detail in it.", "Brief."),
    }
    write_jsonl(tmp_path / "chats.jsonl", [single(q, orig) for q, (orig, _r) in cases.items()])
    sim.script([{"match": q, "answers": [reroll]} for q, (_o, reroll) in cases.items()])
    run_ok(dpo_job(tmp_path / "j.yml", sim.base_url, "  source_file: chats.jsonl\n  choose: length\n"
                   f"  reroll_instruction_in: user\n  reroll_instruction: \"{INSTRUCTION}\"\n"))
    s = store(tmp_path)
    job_id = s.find_job("pairs").id
    for call in s.calls_for_job(job_id):  # the instruction goes before the last user turn; no system is added
        assert [m["role"] for m in call.messages] == ["user"]
        assert call.messages[0]["content"].startswith(f"{INSTRUCTION}\n\nQ-")
    pairs = {p.meta["prompt"][0]["content"]: p.meta for p in s.iter_records(job_id, kind="pair")}
    assert set(pairs) == {"Q-LONGER", "Q-SHORTER"}
    assert pairs["Q-LONGER"]["chosen"]["content"].startswith("A much longer")
    assert pairs["Q-SHORTER"]["chosen"]["content"].startswith("A long original")
    dropped = {r.meta["prompt"][0]["content"]: r.meta["rejected_because"]
               for r in s.iter_records(job_id, kind="rejected")}
    assert "nearly identical" in dropped["Q-SAME"] and "lengths too close" in dropped["Q-CLOSE"]


def test_every_turn_makes_its_own_pair_and_multi_turn_pairs_refuse_the_single_turn_format(tmp_path, sim):
    src = source_job(tmp_path, sim.base_url, follow_ups=True)
    run_ok(dpo_job(tmp_path / "j.yml", sim.base_url, "  source_job: src\n  turns: every\n"))
    s = store(tmp_path)
    pairs = list(s.iter_records(s.find_job("pairs").id, kind="pair"))
    assert len(pairs) == 6  # 3 conversations x 2 assistant turns
    assert sorted(p.meta["source"]["turn"] for p in pairs) == [2, 2, 2, 4, 4, 4]
    for pair in pairs:
        source = next(r for r in s.iter_records(src) if r.id == pair.meta["source"]["record_id"])
        assert pair.meta["prompt"] == source.conversation[:pair.meta["source"]["turn"]]

    refused = gen("export", "pairs", "-o", "intel.jsonl", "--format", "dpo-chatml-intel")
    assert refused.exit_code == 2 and "single-turn" in refused.stderr and "dpo-trl" in refused.stderr
    assert not (tmp_path / "intel.jsonl").exists() and not list(tmp_path.glob(".intel.jsonl.*"))
    rows = export("pairs", "dpo-trl")
    assert sorted(len(r["prompt"]) for r in rows) == [2, 2, 2, 4, 4, 4]


def test_job_file_errors_name_what_is_wrong(tmp_path, sim):
    def refused(options: str, judge: bool = False) -> str:
        with pytest.raises(JobFileError) as caught:
            plan(dpo_job(tmp_path / "v.yml", sim.base_url, options, judge=judge))
        assert caught.value.exit_code == 2
        return str(caught.value)

    assert "needs a teacher named 'judge' (choose: judge)" in refused("  source_file: x.jsonl\n  choose: judge\n")
    assert "exactly one of `source_job` or `source_file`" in refused("  source_job: a\n  source_file: b.jsonl\n")
    assert "instructor.turns" in refused("  source_file: chats.jsonl\n  turns: first\n")
    assert "no gen database" in refused("  source_job: src\n")
    assert not (tmp_path / "gen.db").exists()  # reading a source job never creates a database
    assert "instructor.source_file: cannot read" in refused("  source_file: missing.jsonl\n")
    source_job(tmp_path, sim.base_url)
    assert "instructor.source_job: no job with id or name 'no-such-job'" in refused("  source_job: no-such-job\n")
    assert len(plan(dpo_job(tmp_path / "ok.yml", sim.base_url, "  source_job: src\n  count: 2\n"))) == 2


def test_the_worked_example_rerolls_the_respond_example(tmp_path, sim):
    # A small stand-in for the respond example's job (same name), then the worked example as written.
    riddles = write_job(tmp_path / "r.yml", sim_job(sim.base_url, name="respond-demo"))
    run_ok(riddles)
    result = gen_cmd("run", str(ROOT / "instructors" / "dpo_reroll.yml"), "--dry-run", "--sim-latency", "0.01", "-q")
    assert result.returncode == 0, result.stderr
    s = store(tmp_path)
    riddles_job, pairs_job = s.find_job("respond-demo"), s.find_job("dpo-reroll-demo")
    pairs = s.record_counts(pairs_job.id).get("pair")
    assert pairs == s.record_counts(riddles_job.id)["conversation"]
    for fmt in ("dpo-trl", "dpo-axolotl", "dpo-chatml-intel"):
        assert len(export("dpo-reroll-demo", fmt)) == pairs


# Issue #10: unchecked/unverified sources (point 5), obedience over length (point 9) ---------------------------
def test_unchecked_code_and_unverified_riddles_are_not_rerolled_unless_included(tmp_path, sim):
    from test_coding import coding_job, tasks
    from test_riddles import PIANO, TOWEL, riddles_job, script_blind_answers

    script_blind_answers(sim, piano="A piano.", towel="a sponge")  # the towel riddle is kept, verified: false
    run_ok(write_job(tmp_path / "r.yml", riddles_job(
        sim.base_url, "  count: 2\n  batch_size: 2\n  verify: true\n  on_disagreement: flag\n")))
    py_task, hs_task = "Write a Python function that doubles a number.", "Write a Haskell function that doubles a number."
    sim.script([
        {"match": "a coding assistant, in Python", "answers": [tasks(py_task)]},
        {"match": "a coding assistant, in Haskell", "answers": [tasks(hs_task)]},
        {"match": py_task, "answers": ["Multiply by two.\n\n```python\ndef double(x):\n    return 2 * x\n```\n\nDone."]},
        {"match": hs_task, "answers": ["Multiply by two.\n\n```haskell\ndouble x = 2 * x\n```\n\nDone."]},
    ])
    run_ok(write_job(tmp_path / "c.yml", coding_job(sim.base_url, "  count: 2\n  tasks_per_unit: 1\n"
                                                                  "  plain_ratio: 0\n  languages: [Python, Haskell]\n")))
    s = store(tmp_path)
    assert {r.meta["code_check"] for r in s.iter_records(s.find_job("code").id)} == {"passed", "unchecked"}
    sim.script([])

    def sources_paired(name: str, options: str) -> list[str]:
        run_ok(dpo_job(tmp_path / f"{name}.yml", sim.base_url, options, name=name))
        return sorted(p.meta["prompt"][-1]["content"] for p in s.iter_records(s.find_job(name).id, kind="pair"))

    assert sources_paired("riddle-pairs", "  source_job: riddles\n") == [PIANO[0]]
    assert sources_paired("code-pairs", "  source_job: code\n") == [py_task]
    assert sources_paired("all-riddle-pairs", "  source_job: riddles\n  include: [unverified]\n") == sorted(
        [PIANO[0], TOWEL[0]])
    assert sources_paired("all-code-pairs", "  source_job: code\n  include: [unchecked]\n") == sorted(
        [py_task, hs_task])
    # A source job with nothing usable is refused with what to do about it.
    sim.script([{"match": "a coding assistant, in Haskell", "answers": [tasks(hs_task)]},
                {"match": hs_task, "answers": ["Multiply by two.\n\n```haskell\ndouble x = 2 * x\n```\n\nDone."]}])
    run_ok(write_job(tmp_path / "hs.yml", coding_job(sim.base_url, "  count: 1\n  plain_ratio: 0\n"
                                                                   "  languages: [Haskell]\n").replace(
        "name: code", "name: hs-only")))
    with pytest.raises(JobFileError, match=r"none of the 1 conversations .* 1 with code_check unchecked/failed; "
                                           r"add them with `include: \[unchecked, unverified\]`"):
        plan(dpo_job(tmp_path / "hs-pairs.yml", sim.base_url, "  source_job: hs-only\n"))


def test_choose_reroll_or_length_under_a_length_or_format_constraint_is_refused_at_load(tmp_path, sim):
    from test_systemchat import chat_job

    write_jsonl(tmp_path / "brief.jsonl", [
        single("Hello?", "Hi there."),
        {"messages": [{"role": "system", "content": "Keep every reply to twenty words or fewer."},
                      {"role": "user", "content": "Tell me about Rome."},
                      {"role": "assistant", "content": "An ancient city, capital of Italy."}]}])
    for choose in ("reroll", "length"):
        with pytest.raises(JobFileError, match=rf"instructor.choose: '{choose}' prefers the longer answer, but 1 "
                                               r"source conversation\(s\) carry a length or format constraint "
                                               r"\(max_words:20 in brief.jsonl line 2\); use `choose: judge`"):
            plan(dpo_job(tmp_path / "b.yml", sim.base_url, f"  source_file: brief.jsonl\n  choose: {choose}\n"))
    units = plan(dpo_job(tmp_path / "j.yml", sim.base_url, "  source_file: brief.jsonl\n  choose: judge\n",
                         judge=True))
    assert [u.payload["constraints"] for u in units] == [[], ["max_words:20"]]
    assert units[1].payload["constraints_from"] == "system prompt"

    # A systemchat record's own constraint ids are used (its prompt's wording need not say them plainly).
    sim.script([{"match": "FIVE-WORD-RULE", "answers": ["One two three four five."]}])
    run_ok(write_job(tmp_path / "c.yml", chat_job(sim.base_url, (
        "  system_prompts:\n    - {prompt: 'Obey the FIVE-WORD-RULE.', constraint: {word_count: 5}}\n"
        "  count: 1\n  min_turns: 2\n  max_turns: 2\n  no_system_ratio: 0\n"), judge=False)))
    with pytest.raises(JobFileError, match=r"word_count:5 in record \d+"):
        plan(dpo_job(tmp_path / "p.yml", sim.base_url, "  source_job: chat\n"))
    [unit] = plan(dpo_job(tmp_path / "p.yml", sim.base_url, "  source_job: chat\n  choose: judge\n", judge=True))
    assert unit.payload["constraints"] == ["word_count:5"] and unit.payload["constraints_from"] == "meta"


CAPS = "Answer every message entirely in capital letters."
NO_E = "Never use the letter 'e' in any reply."
NO_BANG = "Never use exclamation marks."


def with_system(system: str | None, question: str, answer: str) -> dict:
    head = [{"role": "system", "content": system}] if system else []
    return {"messages": [*head, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def test_a_reroll_that_breaks_the_system_prompt_is_never_chosen_and_the_judge_sees_the_system_prompt(tmp_path, sim):
    cases = {  # question -> (system prompt, original, reroll)
        "Q-CAPS": (CAPS, "YES, IT IS.", "Yes, it is, and here is a good deal more detail about why."),
        "Q-BOTH": (NO_BANG, "Sure thing!", "Absolutely, and with pleasure!"),
        "Q-NO-E": (NO_E, "The answer is yes.", "A fox can run far, and so can a cat."),
        "Q-FILTER": (None, "Paris.", "As an AI language model, I can say it is Paris, the capital of France."),
        "Q-JUDGED": (CAPS, "NO.", "NO, NOT AT ALL, AND HERE IS WHY."),
    }
    write_jsonl(tmp_path / "chats.jsonl", [with_system(sy, q, o) for q, (sy, o, _r) in cases.items()])
    sim.script([
        {"match": "<answer_a>\nNO.", "answers": [json.dumps({"reasoning": "r", "winner": "B"})]},
        {"match": "<answer_a>\nNO, NOT", "answers": [json.dumps({"reasoning": "r", "winner": "A"})]},
        *({"match": q, "answers": [reroll]} for q, (_s, _o, reroll) in cases.items()),
    ])
    run_ok(dpo_job(tmp_path / "j.yml", sim.base_url, "  source_file: chats.jsonl\n  choose: judge\n", judge=True))
    s = store(tmp_path)
    job_id = s.find_job("pairs").id
    pairs = {p.meta["prompt"][-1]["content"]: p.meta for p in s.iter_records(job_id, kind="pair")}
    assert set(pairs) == {"Q-CAPS", "Q-NO-E", "Q-FILTER", "Q-JUDGED"}
    chosen = {q: m["chosen"]["content"] for q, m in pairs.items()}
    assert chosen == {"Q-CAPS": "YES, IT IS.", "Q-NO-E": "A fox can run far, and so can a cat.",
                      "Q-FILTER": "Paris.", "Q-JUDGED": "NO, NOT AT ALL, AND HERE IS WHY."}
    assert pairs["Q-CAPS"]["verdicts"][0]["policy"] == "rules"
    assert pairs["Q-CAPS"]["breaks"]["reroll"][0].startswith("all_caps: has ")
    assert pairs["Q-NO-E"]["breaks"]["original"][0].startswith("no_letter:e: contains the letter")
    assert pairs["Q-FILTER"]["breaks"]["reroll"] and not pairs["Q-FILTER"]["breaks"]["original"]
    assert pairs["Q-JUDGED"]["verdicts"][0]["policy"] == "judge"
    [dropped] = s.iter_records(job_id, kind="rejected")
    assert dropped.meta["rejected_because"].startswith("both answers break the system prompt (original: "
                                                       "no_exclamation: has 1 exclamation mark(s)")
    # Only the pair both answers of which keep the rules went to the judge, which saw the system prompt apart.
    judge_calls = [c for c in s.calls_for_job(job_id) if c.teacher == "judge"]
    assert len(judge_calls) == 2
    for call in judge_calls:
        text = call.messages[0]["content"]
        assert f"<system_prompt>\n{CAPS}\n</system_prompt>" in text and "Obeying the system prompt comes first" in text
    # The reroll teacher was told the system prompt's rules come first, where there were rules.
    rerolls = {c.messages[-1]["content"]: c.messages[0]["content"] for c in s.calls_for_job(job_id)
               if c.teacher == "reroll"}
    assert "keep every rule of the system prompt" in rerolls["Q-CAPS"]
    assert "keep every rule of the system prompt" not in rerolls["Q-FILTER"]


def test_choose_reroll_still_keeps_the_original_when_the_reroll_breaks_a_rule(tmp_path, sim):
    write_jsonl(tmp_path / "chats.jsonl", [with_system(CAPS, "Q-CAPS", "YES, IT IS.")])
    sim.script([{"match": "Q-CAPS", "answers": ["Yes, it is, with a lot more detail."]}])
    run_ok(dpo_job(tmp_path / "j.yml", sim.base_url, "  source_file: chats.jsonl\n"))
    s = store(tmp_path)
    [pair] = s.iter_records(s.find_job("pairs").id, kind="pair")
    assert pair.meta["chosen"]["content"] == "YES, IT IS." and pair.meta["choose"] == "reroll"
    assert pair.meta["rejected"]["content"] == "Yes, it is, with a lot more detail."
