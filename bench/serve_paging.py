"""The review UI's record browser on a job of 1,000,000 records (SQLite): keyset pages vs an OFFSET scan.

    python bench/serve_paging.py [N]     # default 1,000,000 records; the database goes to a temporary folder

Times the browser's own query (gen.serve.records.browse_records) for the first page, a page near the end (by
cursor), filtered pages, and a text search; then, for comparison, the same page fetched with OFFSET.
Prints its figures; asserts nothing.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

from gen.serve.pages import records_page
from gen.serve.records import RecordFilter, browse_records
from gen.store import Store
from gen.store.models import Record, utcnow


def fill(store: Store, n: int) -> str:
    job = store.create_job(name="big", instructor="respond", spec={}, spec_hash="h", units=[("u", {})])
    unit_id = store.units(job.id)[0].id
    now = utcnow()
    batch = 20_000
    with store.engine.begin() as conn:
        for start in range(0, n, batch):
            conn.execute(Record.__table__.insert(), [
                {"job_id": job.id, "unit_id": unit_id, "key": f"k{i}", "kind": "rejected" if i % 7 == 0 else "conversation",
                 "conversation": [{"role": "user", "content": f"question {i} about {'owls' if i % 1000 == 0 else 'cats'}"},
                                  {"role": "assistant", "content": f"answer number {i}"}],
                 "meta": {"category": "even" if i % 2 == 0 else "odd", "judge": {"mean": i % 5 + 1}},
                 "call_ids": [], "created_at": now} for i in range(start, min(start + batch, n))])
    return job.id


def timed(label: str, fn) -> None:
    t0 = time.perf_counter()
    rows = fn()
    print(f"{label:58} {1000 * (time.perf_counter() - t0):8.1f} ms  ({len(rows)} rows)")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'big.db'}")
        t0 = time.perf_counter()
        job_id = fill(store, n)
        print(f"{n:,} records written in {time.perf_counter() - t0:.0f} s")
        with store.engine.connect() as conn:
            last_ids = list(conn.execute(select(Record.id).where(Record.job_id == job_id)
                                         .order_by(Record.id.desc()).limit(60)).scalars())
        near_end = last_ids[-1]
        timed("first page", lambda: browse_records(store, job_id, RecordFilter())[0])
        timed(f"page after record {near_end:,} (cursor)", lambda: browse_records(store, job_id, RecordFilter(after=near_end))[0])
        timed("kind=rejected, near the end (cursor)",
              lambda: browse_records(store, job_id, RecordFilter(kind="rejected", after=near_end - 500))[0])
        timed("category=odd, judge mean >= 5, first page",
              lambda: browse_records(store, job_id, RecordFilter(category="odd", min_score=5))[0])
        timed("text 'owls' (1 record in 1,000), first page",
              lambda: browse_records(store, job_id, RecordFilter(q="owls"))[0])
        timed("text matching nothing (scans the job)", lambda: browse_records(store, job_id, RecordFilter(q="zebra"))[0])
        timed("the whole records page (HTML), near the end (cursor)",
              lambda: records_page(store, job_id, RecordFilter(after=near_end)).splitlines())
        offset = n - 60
        with store.engine.connect() as conn:
            timed(f"for comparison: the same page by OFFSET {offset:,}", lambda: conn.execute(
                select(Record.id, Record.conversation, Record.meta).where(Record.job_id == job_id)
                .order_by(Record.id).offset(offset).limit(51)).all())
        store.close()


if __name__ == "__main__":
    main()
