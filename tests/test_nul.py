"""Text PostgreSQL refuses (NUL) is stored losslessly: an answer holding `\\x00` goes through `gen run` on
PostgreSQL and comes back byte-identical in the record, the call and `gen export`."""
from __future__ import annotations

import json

from conftest import gen_cmd, sim_job, write_job
from gen.store import Store
from gen.store.types import escape_text, unescape_text

ANSWER = "before\x00after \uffff mark \uffff0 and \uffff\uffff, NUL at the end\x00"


def test_escape_round_trips_every_mark_combination():
    for text in ["", "\x00", "\uffff", "\uffff0", "\uffff\x00", "\x00\uffff", "a\uffff\uffffb", ANSWER]:
        escaped = escape_text(text)
        assert "\x00" not in escaped
        assert unescape_text(escaped) == text


def test_an_answer_with_nul_is_stored_and_exported_byte_identical_on_postgresql(sim, pg_url, tmp_path):
    sim.script([{"match": "Question number 0", "answers": [ANSWER]}])
    job = write_job(tmp_path / "nul.yml", sim_job(sim.base_url, name="nul", prompts=1))
    ran = gen_cmd("--db", pg_url, "run", str(job), "-q")
    assert ran.returncode == 0, ran.stderr
    store = Store(pg_url)
    try:
        job_id = store.list_jobs()[0].id
        records = list(store.iter_records(job_id))
        assert len(records) == 1
        assert records[0].conversation[-1]["content"] == ANSWER
        assert store.stats(job_id).units["done"] == 1
        with store.engine.connect() as conn:
            stored = [row[0] for row in conn.exec_driver_sql("SELECT text FROM calls WHERE text IS NOT NULL")]
        assert "\x00" not in stored[0]  # what PostgreSQL holds is escaped...
    finally:
        store.close()
    out = tmp_path / "out.jsonl"
    exported = gen_cmd("--db", pg_url, "export", job_id, "-o", str(out), "-f", "messages")
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows[0]["messages"][-1]["content"] == ANSWER  # ...and what comes back is the answer as sent
