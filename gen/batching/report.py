"""Batches for the CLI: the lines `gen status` shows, and cancelling a job's batches for `gen cancel`."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from gen.batching.apis import make_batch_api
from gen.config import JobSpec
from gen.store import batches as db
from gen.store.models import utcnow

if TYPE_CHECKING:  # pragma: no cover
    from gen.store import Store


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def batch_status_lines(store: "Store", job_id: str) -> list[str]:
    """One line per batch in flight (submitted, counts, age, next poll), after a summary; nothing when the job
    never used a batch."""
    rows = db.submissions(store, job_id=job_id)
    if not rows:
        return []
    now = utcnow()
    in_flight = [r for r in rows if r.status == "submitted"]
    finished = len(rows) - len(in_flight)
    lines = [f"  batches  {len(rows)} submitted ({len(in_flight)} in flight, {finished} finished), "
             f"{sum(r.requests for r in rows)} requests, {sum(r.failed for r in rows)} failed inside a batch"]
    for row in in_flight:
        created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=now.tzinfo)
        poll = ""
        if row.next_poll_at is not None:
            nxt = row.next_poll_at if row.next_poll_at.tzinfo else row.next_poll_at.replace(tzinfo=now.tzinfo)
            poll = f", next poll in {_age((nxt - now).total_seconds())}"
        lines.append(f"    batch {row.id} ({row.teacher}, {row.provider}): {row.requests} requests, "
                     f"age {_age((now - created).total_seconds())}{poll}")
    return lines


def cancel_batches(store: "Store", job_id: str, spec: JobSpec) -> int:
    """Cancel the job's batches still in flight at their providers; how many were cancelled. A batch the
    provider no longer knows is marked cancelled too (nothing more will come from it)."""
    rows = db.submissions(store, job_id=job_id, in_flight_only=True)
    if not rows:
        return 0

    async def cancel_all() -> int:
        apis, done = {}, 0
        try:
            for row in rows:
                teacher = spec.teachers.get(row.teacher)
                if teacher is None:
                    continue
                api = apis.get(row.teacher) or apis.setdefault(row.teacher, make_batch_api(teacher))
                await api.cancel(row.id)
                db.mark_cancelled(store, batch_id=row.id)
                done += 1
        finally:
            for api in apis.values():
                await api.aclose()
        return done

    return asyncio.run(cancel_all())
