"""`gen export` writes byte-identical files for a fixed set of stored records, in every format and with every
option that changes a line (--meta, --include, --rejected, --no-filter, --filter-phrase, text templates), on
SQLite and PostgreSQL; and a stored record that would make an invalid line still fails with the same one line.

The golden files under tests/golden/export/ were written by the export before its fast path (the one that does
not re-validate every line against the JSON Schema): they prove the fast path equivalent.
Regenerate them only for an intended change of output: GEN_WRITE_GOLDEN=1 pytest tests/test_export_golden.py.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import insert

from gen.export import RefusalFilter, export_job
from gen.store import Store
from gen.store.models import Record
from gen.store.reviews import add_review
from gen.types import NewRecord

GOLDEN = Path(__file__).resolve().parent / "golden" / "export"
WRITE = os.environ.get("GEN_WRITE_GOLDEN") == "1"

SYSTEM = "Tu réponds en français — briefly, \"quoted\", back\\slash."
ODD = "tab\there, newline\nhere, bell\x07, NUL-free control \x1f, LS\u2028PS\u2029, emoji 😀, CJK 中文, é\u0301"
META = {"teacher": "main", "model": "sim-1", "score": 0.1, "tiny": 1e-7, "whole": 3.0, "big": 2**60,
        "neg": -0.0, "flags": [True, False, None], "nested": {"ключ": "значение", "list": [1, 2.5, "x"]}}


def _turns(*pairs: tuple[str, str], system: str | None = None) -> list[dict[str, str]]:
    conv = [{"role": "system", "content": system}] if system else []
    for user, assistant in pairs:
        conv += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return conv


def _job(store: Store, name: str, groups: list[list[NewRecord]]) -> str:
    job = store.create_job(name=name, instructor="respond", spec={}, spec_hash=name,
                           units=[(f"u{i}", {}) for i in range(len(groups))])
    for unit, records in zip(store.units(job.id), groups):
        store.finish_unit_with_records(job.id, unit.id, records, [])
    return job.id


def build(store: Store) -> dict[str, str]:
    """Three jobs: multi-turn chats (with every kind of record a chat job holds), single-turn chats, pairs."""
    judged = {**META, "judge": {"threshold": 4},
              "turn_scores": [{"turn": 1, "score": 5}, {"turn": 2, "score": 4, "violations": []},
                              {"turn": 3, "score": 2}]}
    chat = _job(store, "chat", [
        [NewRecord("multi", _turns(("Hello there", "Hi! " + ODD), ("And then?", "Then this."),
                                   ("Last one", "Done."), system=SYSTEM), meta=META)],
        [NewRecord("no-system", _turns(("Count to 3", "1, 2, 3")), meta={})],
        [NewRecord("refusal", _turns(("Tell me a secret.",
                                     "I\u2019m sorry, but I can\u2019t help with that request.")))],
        [NewRecord("guardrail", _turns(("Dose of X?", "I'm sorry, I can't give dosages."),
                                       system="Never give medical dosages."), meta={"refusals_expected": True})],
        [NewRecord("disclaimer", _turns(("Feelings?", "As an AI language model, I have none.")))],
        [NewRecord("unchecked", _turns(("Write code", "print(1)")), meta={"code_check": "unchecked"})],
        [NewRecord("unverified", _turns(("Riddle?", "A map.")), meta={"verified": False, "answer": "map"})],
        [NewRecord("excluded", _turns(("Exclude me", "Sure.")), meta={"x": 1})],
        [NewRecord("judged", _turns(("a", "b"), ("c", "d"), ("e", "f"), system="Speak plainly."), meta=judged)],
        [NewRecord("kept-rejected", _turns(("Rejected?", "Maybe.")), kind="rejected",
                   meta={"rejected_because": "too short"}),
         NewRecord("put-back", _turns(("Put back?", "Yes, by a reviewer.")), kind="rejected",
                   meta={"rejected_because": "judge said so"})],
        [NewRecord("phrase", _turns(("Colour?", "Blue, obviously.")), meta={})],
    ])
    single = _job(store, "single", [
        [NewRecord("s1", _turns(("Name a prime.", "Seven. " + ODD)), meta=META)],
        [NewRecord("s2", _turns(("Capital of France?", "Paris."), system=SYSTEM))],
        [NewRecord("s-refusal", _turns(("Hack it.", "I'm sorry, but I can't help with that.")))],
    ])
    pair_meta = {"prompt": _turns(system=SYSTEM) + [{"role": "user", "content": "Pick one " + ODD}],
                 "chosen": {"role": "assistant", "content": "The long answer."},
                 "rejected": {"role": "assistant", "content": "Short."}, "winner": "reroll", "score": 0.75}
    no_system = {**pair_meta, "prompt": [{"role": "user", "content": "Plain question"}]}
    pairs = _job(store, "pairs", [
        [NewRecord("p1", [*pair_meta["prompt"], pair_meta["chosen"]], kind="pair", meta=pair_meta)],
        [NewRecord("p2", [*no_system["prompt"], no_system["chosen"]], kind="pair", meta=no_system)],
        [NewRecord("p-dropped", [*no_system["prompt"], no_system["rejected"]], kind="rejected",
                   meta={**no_system, "rejected_because": "tie"})],
    ])
    ids = {r.key: r.id for job in (chat, single, pairs) for r in store.iter_records(job)}
    add_review(store, record_id=ids["excluded"], action="exclude", reason="off topic", who="tester")
    add_review(store, record_id=ids["put-back"], action="include", reason=None, who="tester")
    return {"chat": chat, "single": single, "pairs": pairs}


CASES = {  # name: (job, format, export_job options, refusal filter options or None for --no-filter)
    "messages": ("chat", "messages", {}, {}),
    "messages-meta": ("chat", "messages", {"with_meta": True}, {}),
    "messages-include": ("chat", "messages", {"include": ["unchecked", "unverified"]}, {}),
    "messages-no-filter": ("chat", "messages", {}, None),
    "messages-phrase": ("chat", "messages", {}, {"extra_phrases": ["obviously"], "extra_patterns": [r"th+en"]}),
    "messages-rejected": ("chat", "messages", {"rejected": True, "with_meta": True}, {}),
    "sharegpt": ("chat", "sharegpt", {}, {}),
    "sharegpt-meta": ("chat", "sharegpt", {"with_meta": True, "include": ["unchecked"]}, {}),
    "sharegpt-rejected": ("chat", "sharegpt", {"rejected": True}, {}),
    "text-all": ("chat", "text", {"all_templates": True}, {}),
    "text-chatml-meta": ("chat", "text", {"template": "chatml", "with_meta": True}, {}),
    "kto-judged": ("chat", "kto", {"with_meta": True}, {}),
    "alpaca": ("single", "alpaca", {}, {}),
    "alpaca-meta": ("single", "alpaca", {"with_meta": True}, None),
    "dpo-trl": ("pairs", "dpo-trl", {}, {}),
    "dpo-axolotl": ("pairs", "dpo-axolotl", {"with_meta": True}, {}),
    "dpo-chatml-intel": ("pairs", "dpo-chatml-intel", {}, {}),
    "kto-pairs": ("pairs", "kto", {"with_meta": True}, {}),
}


def _export(store: Store, job_id: str, out: Path, fmt: str, options: dict, filter_options: dict | None):
    refusal_filter = None if filter_options is None else RefusalFilter(**filter_options)
    return export_job(store, job_id, str(out), fmt, refusal_filter=refusal_filter, **options)


@pytest.fixture
def stored(db_url):
    store = Store(db_url)
    jobs = build(store)
    yield store, jobs
    store.close()


def test_every_format_writes_the_golden_bytes(stored, tmp_path):
    store, jobs = stored
    GOLDEN.mkdir(parents=True, exist_ok=True)
    reports = {}
    for name, (job, fmt, options, filter_options) in CASES.items():
        out = tmp_path / f"{name}.jsonl"
        report = _export(store, jobs[job], out, fmt, options, filter_options)
        reports[name] = [report.written, report.records, report.filtered, report.by_rule, report.held_back]
        golden = GOLDEN / f"{name}.jsonl"
        if WRITE:
            golden.write_bytes(out.read_bytes())
        assert out.read_bytes() == golden.read_bytes(), f"{name}: output differs from {golden}"
    golden_reports = GOLDEN / "reports.json"
    if WRITE:
        golden_reports.write_text(json.dumps(reports, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    assert json.loads(json.dumps(reports)) == json.loads(golden_reports.read_text(encoding="utf-8"))


BROKEN = {  # a record stored around the write path's checks (an old database, a hand edit): name -> conversation
    "empty-content": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}],
    "content-not-text": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": 5}],
    "one-turn": [{"role": "user", "content": "Hi"}],
    "unknown-role": [{"role": "user", "content": "Hi"}, {"role": "tool", "content": "{}"}],
    "blank-content": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " "}],
    "extra-field": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo", "name": "bot"}],
}


@pytest.mark.parametrize("fmt", ["messages", "sharegpt", "text"])
def test_a_stored_record_that_makes_an_invalid_line_fails_with_the_same_line_and_leaves_no_file(fmt, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'broken.db'}")
    messages = {}
    for name, conversation in BROKEN.items():
        job = store.create_job(name=name, instructor="respond", spec={}, spec_hash=name, units=[("u", {})])
        unit = store.units(job.id)[0]
        with store.engine.begin() as conn:
            conn.execute(insert(Record.__table__).values(job_id=job.id, unit_id=unit.id, key="k", kind="conversation",
                                                         conversation=conversation, meta={}, call_ids=[]))
        out = tmp_path / f"{name}.jsonl"
        try:
            _export(store, job.id, out, fmt, {"template": "chatml"} if fmt == "text" else {}, None)
            messages[name] = None
        except Exception as exc:  # what the export said (a GenError is one line; anything else is a crash)
            messages[name] = f"{type(exc).__name__}: {exc}"
        assert not out.exists() or messages[name] is None
    golden = GOLDEN / f"broken-{fmt}.json"
    if WRITE:
        golden.write_text(json.dumps(messages, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    assert messages == json.loads(golden.read_text(encoding="utf-8"))
