"""Records are screened once, when the core stores them (gen.record_screen), and `gen export` takes that verdict:
the same lines and the same drops as checking every record again, without checking it again. Records stored by an
earlier gen, or screened by other rules, and exports that add phrases of their own, are checked as before."""
from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text

from conftest import gen_cmd, sim_job, write_job
from gen.record_screen import read_screen, screen, screen_version
from gen.refusals import DISCLAIMER, KINDS, RefusalDetector
from gen.store import Store

DATA = Path(__file__).parent / "data" / "refusals.jsonl"
REFUSAL = "I\u2019m sorry, but I can\u2019t help with that request."


def run_job(sim, tmp_path) -> tuple[Store, str]:
    sim.script([{"match": "Tell me a secret", "answers": [REFUSAL]},
                {"match": "Name a prime", "answers": ["Seven is prime: its only divisors are 1 and itself."]},
                {"match": "Name a colour", "answers": ["Teal, a blue-green."]}])
    job = write_job(tmp_path / "j.yml", sim_job(sim.base_url, name="screen", prompts=0).replace(
        "  prompts:\n", "  prompts:\n    - Tell me a secret.\n    - Name a prime.\n    - Name a colour.\n"))
    result = gen_cmd("run", str(job), "-q")
    assert result.returncode == 0, result.stderr
    store = Store(f"sqlite:///{tmp_path / 'gen.db'}")
    return store, store.list_jobs()[0].id


def screens(store: Store, job_id: str) -> dict[str, str | None]:
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT conversation, screen FROM records WHERE job_id = :j"), {"j": job_id}).all()
    return {json.loads(c)[0]["content"]: s for c, s in rows}


def set_screen(store: Store, job_id: str, prompt: str, value: str | None) -> None:
    with store.engine.begin() as conn:
        for rid, conv in conn.execute(text("SELECT id, conversation FROM records WHERE job_id = :j"), {"j": job_id}):
            if json.loads(conv)[0]["content"] == prompt:
                conn.execute(text("UPDATE records SET screen = :s WHERE id = :i"), {"s": value, "i": rid})


def exported(job_id: str, fmt: str = "messages", *extra: str) -> tuple[list[str], str]:
    result = gen_cmd("export", job_id, "-o", "out.jsonl", "--format", fmt, *extra)
    assert result.returncode == 0, result.stderr
    return Path("out.jsonl").read_text(encoding="utf-8").splitlines(), result.stderr


def prompts(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        row = json.loads(line)
        turns = row.get("messages") or row["conversations"]
        out.append(next(t.get("content", t.get("value")) for t in turns if t.get("role", t.get("from")) in
                        ("user", "human")))
    return sorted(out)  # records are stored in the order their units finished


def test_a_run_stores_each_record_with_this_gens_verdict(sim, tmp_path):
    store, job_id = run_job(sim, tmp_path)
    stored = screens(store, job_id)
    assert stored["Name a prime."] == screen_version() and stored["Name a colour."] == screen_version()
    verdict = read_screen(stored["Tell me a secret."])
    assert verdict is not None and verdict.match is not None and verdict.match.kind == "refusal"
    lines, err = exported(job_id)
    assert prompts(lines) == ["Name a colour.", "Name a prime."] and "1 dropped by the refusal filter" in err


def test_export_takes_the_stored_verdict_instead_of_checking_again(sim, tmp_path):
    store, job_id = run_job(sim, tmp_path)
    # a verdict from the screen, not from the text: marked as a disclaimer, the clean record is left out ...
    set_screen(store, job_id, "Name a colour.", "\x1f".join((screen_version(), DISCLAIMER, "as an AI", "x")))
    lines, err = exported(job_id)
    assert prompts(lines) == ["Name a prime."] and "2 dropped by the refusal filter" in err
    # ... and an export with phrases of its own checks every record again (its rules are not the screen's)
    lines, err = exported(job_id, "messages", "--filter-phrase", "zebra")
    assert prompts(lines) == ["Name a colour.", "Name a prime."] and "1 dropped" in err


def test_records_not_screened_by_this_gen_are_checked_as_before(sim, tmp_path):
    store, job_id = run_job(sim, tmp_path)
    set_screen(store, job_id, "Tell me a secret.", None)                  # stored by a gen before screens
    set_screen(store, job_id, "Name a prime.", "0123456789abcdef")        # screened by other rules: "clean"
    set_screen(store, job_id, "Name a colour.", "0123456789abcdef\x1frefusal\x1fI can't\x1fI can't")
    lines, err = exported(job_id)
    assert prompts(lines) == ["Name a colour.", "Name a prime."] and "1 dropped by the refusal filter" in err


def test_screened_and_checked_records_export_the_same_bytes(sim, tmp_path):
    store, job_id = run_job(sim, tmp_path)
    for fmt in ("messages", "sharegpt"):
        trusted, _ = exported(job_id, fmt)
        with store.engine.begin() as conn:
            saved = conn.execute(text("SELECT id, screen FROM records")).all()
            conn.execute(text("UPDATE records SET screen = NULL"))
        checked, _ = exported(job_id, fmt)
        with store.engine.begin() as conn:
            for rid, value in saved:
                conn.execute(text("UPDATE records SET screen = :s WHERE id = :i"), {"s": value, "i": rid})
        assert trusted == checked and len(trusted) == 2


def test_the_stored_verdict_is_the_filters_on_the_labelled_set():
    """Every labelled text, as an assistant turn: the verdict read back from its screen is what the export
    filter finds checking it (refusals and disclaimers; disclaimers only when refusals are the record's point)."""
    everything, disclaimers = RefusalDetector(KINDS), RefusalDetector([DISCLAIMER])
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) > 100
    for row in rows:
        conversation = [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": row["text"]}]
        for meta, detector in (({}, everything), ({"refusals_expected": True}, disclaimers)):
            verdict, expected = read_screen(screen(conversation, meta)), detector.match_conversation(conversation)
            assert verdict is not None
            if expected is None:
                assert verdict.match is None, row["text"]
            else:  # the matched words are kept on one line, at most 200 characters
                assert verdict.match is not None, row["text"]
                assert (verdict.match.kind, verdict.match.rule, verdict.match.text) == \
                    (expected.kind, expected.rule, " ".join(expected.text.split())[:200])
