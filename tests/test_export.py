"""`gen export`: every line parses, validates, and has exactly the documented shape; refusals are filtered."""
from __future__ import annotations

import json

import pytest

from conftest import gen_cmd, sim_job, write_job
from gen.export import line_validator
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
