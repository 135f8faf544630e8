"""`gen assemble`: jobs and JSONL files combined by priority, deduplicated by uuid5 of the normalised instruction,
decontaminated against benchmark files, written in every conversation format."""
from __future__ import annotations

import json
import uuid

import pytest

from conftest import gen_cmd, sim_job, write_job
from gen.assemble import instruction_key
from gen.export import FORMATS, line_validator
from gen.schemas import first_problem

PROMPTS = ["What is the boiling point of water at sea level?", "Name three primary colours.",
           "Who wrote Pride and Prejudice?"]
BENCH_Q = "Which gas do plants absorb from the atmosphere during photosynthesis in order to make sugars?"


def respond_job(base_url: str, name: str, prompts: list[str]) -> str:
    instructor = "  type: respond\n  prompts:\n" + "".join(f"    - {json.dumps(p)}\n" for p in prompts)
    return sim_job(base_url, name=name, instructor=instructor)


def run_two_jobs(sim, tmp_path) -> None:
    """Job `low` and job `high` answer the same prompts (with different capitalisation), each in its own words."""
    sim.script([{"match": "", "answers": ["answer from job low"]}])
    low = write_job(tmp_path / "low.yml", respond_job(sim.base_url, "low", PROMPTS))
    assert gen_cmd("run", str(low), "-q").returncode == 0
    sim.script([{"match": "", "answers": ["answer from job high"]}])
    high = write_job(tmp_path / "high.yml", respond_job(sim.base_url, "high",
                                                         [p.upper() for p in PROMPTS[:2]] + ["Another question?"]))
    assert gen_cmd("run", str(high), "-q").returncode == 0


def rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_overlapping_jobs_keep_the_higher_priority_copy(sim, tmp_path):
    run_two_jobs(sim, tmp_path)
    out = tmp_path / "mix.jsonl"
    result = gen_cmd("assemble", "--job", "low=1", "--job", "high=5", "-o", str(out), "-f", "messages", "--meta")
    assert result.returncode == 0, result.stderr
    got = {r["messages"][0]["content"]: r for r in rows(out)}
    assert len(got) == 4  # 3 + 3 rows, 2 instructions in common
    for prompt in PROMPTS[:2]:
        assert prompt.upper() in got and prompt not in got
        assert got[prompt.upper()]["messages"][1]["content"] == "answer from job high"
        assert got[prompt.upper()]["metadata"]["source"] == "job high"
        assert got[prompt.upper()]["metadata"]["uuid"] == str(uuid.uuid5(uuid.NAMESPACE_OID, prompt.lower().rstrip(
            "?.")))
    assert got[PROMPTS[2]]["messages"][1]["content"] == "answer from job low"
    summary = result.stderr
    assert "gen assemble: 4 messages lines written" in summary
    assert "job low" in summary and "read      3  kept      1  lost      2: 2 duplicates (kept from job high: 2)" \
        in summary
    # the same priorities the other way round keep the other copy
    again = gen_cmd("assemble", "--job", "low=9", "--job", "high=5", "-o", str(out), "-f", "messages")
    assert again.returncode == 0, again.stderr
    assert {r["messages"][1]["content"] for r in rows(out) if r["messages"][0]["content"].lower() ==
            PROMPTS[0].lower()} == {"answer from job low"}


def test_equal_priorities_keep_the_source_listed_first_and_the_key_ignores_case_and_punctuation():
    assert instruction_key("Name three primary colours.") == instruction_key("  name THREE primary colours ")
    assert instruction_key("Name three primary colours.") != instruction_key("Name three secondary colours.")


def write_rows(path, items) -> None:
    path.write_text("".join(json.dumps(i) + "\n" for i in items))


def test_a_row_matching_a_benchmark_is_removed_and_reported_with_the_item(tmp_path):
    write_rows(tmp_path / "bench.jsonl", [{"question": BENCH_Q, "answer": "carbon dioxide"},
                                         {"question": "What is the capital of Mongolia?", "answer": "Ulaanbaatar"}])
    (tmp_path / "bench.txt").write_text("Explain why the sky looks blue on a clear day at noon\n")
    write_rows(tmp_path / "data.jsonl", [
        # n-gram overlap: the benchmark question inside a longer instruction
        {"instruction": f"Answer briefly. {BENCH_Q} Then explain.", "input": "", "output": "CO2"},
        # near-duplicate of the text benchmark's line
        {"messages": [{"role": "user", "content": "explain, why the sky looks so blue on a clear day at noon"},
                      {"role": "assistant", "content": "Rayleigh scattering."}]},
        {"conversations": [{"from": "human", "value": "Write a haiku about autumn."},
                           {"from": "gpt", "value": "Leaves fall, slow and red."}]},
        "not a row",
    ])
    out, report = tmp_path / "mix.jsonl", tmp_path / "removed.jsonl"
    result = gen_cmd("assemble", "--file", str(tmp_path / "data.jsonl"), "--benchmark", str(tmp_path / "bench.jsonl"),
                     "--benchmark", str(tmp_path / "bench.txt"), "--ngram", "6", "--near-dup-threshold", "0.9",
                     "--ngram-overlap", "0.8", "-o", str(out), "--report", str(report))
    assert result.returncode == 0, result.stderr
    assert [r["conversations"][0]["value"] for r in rows(out)] == ["Write a haiku about autumn."]
    removed = {r["test"]: r for r in rows(report)}
    assert removed["ngram"]["reason"] == "benchmark" and removed["ngram"]["score"] == 1.0
    assert removed["ngram"]["benchmark"] == {"file": str(tmp_path / "bench.jsonl"), "line": 1, "text": BENCH_Q}
    assert removed["near-duplicate"]["benchmark"]["text"] == "Explain why the sky looks blue on a clear day at noon"
    assert removed["near-duplicate"]["score"] >= 0.9
    assert "read      4  kept      1  lost      3: 2 matched a benchmark; 1 unreadable lines (first: line 4" \
        in result.stderr
    # without decontamination the same rows are all kept
    plain = gen_cmd("assemble", "--file", str(tmp_path / "data.jsonl"), "-o", str(out))
    assert plain.returncode == 0 and len(rows(out)) == 3


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_the_output_validates_in_every_format(fmt, tmp_path):
    write_rows(tmp_path / "a.jsonl", [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                      {"role": "assistant", "content": "Hello."}]},
        {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
        {"messages": [{"role": "user", "content": "One"}, {"role": "assistant", "content": "1"},
                      {"role": "user", "content": "Two"}, {"role": "assistant", "content": "2"}]}])
    (tmp_path / "mix.yml").write_text(f"output: out/mix.jsonl\nformat: {fmt}\nsources:\n  - file: a.jsonl\n"
                                      "    priority: 1\n    name: extra\n")
    (tmp_path / "out").mkdir()
    result = gen_cmd("assemble", str(tmp_path / "mix.yml"))  # paths relative to the file's folder
    assert result.returncode == 0, result.stderr
    lines = rows(tmp_path / "out" / "mix.jsonl")
    validator = line_validator(fmt)
    assert all(first_problem(validator, line) is None for line in lines)
    if fmt == "alpaca":  # single-turn only: the multi-turn row is lost, and said so
        assert len(lines) == 2 and "1 not writable as alpaca" in result.stderr
    else:
        assert len(lines) == 3


@pytest.mark.parametrize("args, message", [
    (["--job", "nope", "-o", "x.jsonl"], "nope"),
    (["-o", "x.jsonl"], "no sources"),
    (["--file", "missing.jsonl", "-o", "x.jsonl"], "cannot read source file missing.jsonl"),
    (["--file", "a.jsonl=high", "-o", "x.jsonl"], "priority after '=' must be an integer"),
    (["--file", "a.jsonl", "-o", "x.jsonl", "-f", "dpo-trl"], "not a conversation format"),
    (["--file", "a.jsonl", "-o", "x.jsonl", "--ngram", "3"], "need a --benchmark"),
])
def test_user_errors_are_one_line(tmp_path, args, message):
    write_rows(tmp_path / "a.jsonl", [{"instruction": "Hi", "output": "Hello"}])
    (tmp_path / "gen.db").touch() if args[0] == "--job" else None
    result = gen_cmd("assemble", *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("gen: error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_rows_all_dropped_write_nothing(tmp_path):
    write_rows(tmp_path / "a.jsonl", [{"instruction": "What is the capital of Mongolia?", "output": "Ulaanbaatar"}])
    (tmp_path / "b.txt").write_text("What is the capital of Mongolia?\n")
    result = gen_cmd("assemble", "--file", "a.jsonl", "--benchmark", "b.txt", "-o", "x.jsonl")
    assert result.returncode == 2 and "nothing written: no row was kept (1 benchmark)" in result.stderr
    assert not (tmp_path / "x.jsonl").exists()
