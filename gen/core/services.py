"""The services the execution core hands instructors instead of a database (gen.instructors.base.JobServices)."""
from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import unquote

from gen.errors import JobFileError, UnknownJobError
from gen.sources import SourceConversation

log = logging.getLogger("gen.sources")


class DatabaseEarlierJobs:
    """Earlier jobs' conversation records, from the database at `url` (opened on first use, closed after)."""

    def __init__(self, url: str):
        self.url = url

    def conversations(self, ref: str, *, label: str, option: str) -> list[SourceConversation]:
        missing = _missing_sqlite_file(self.url)
        if missing:  # said before the database layer is imported: `gen validate` stays quick
            raise JobFileError(label, [f"{option}: no gen database at {missing} to read job '{ref}' from "
                                       "(run that job first, or set GEN_DATABASE_URL)"])
        from gen.store import Store, UnitState
        from gen.store.db import redact

        store = Store(self.url)
        try:
            try:
                job = store.find_job(ref)
            except UnknownJobError:
                raise JobFileError(label, [f"{option}: no job with id or name '{ref}' in {redact(self.url)} "
                                           "(see `gen jobs`)"]) from None
            found = [SourceConversation(
                conversation=[{"role": m["role"], "content": m["content"]} for m in record.conversation],
                link={"job_id": job.id, "job_name": job.name, "record_id": record.id, "record_key": record.key},
                author={"job": job.name, "instructor": job.instructor, "teacher": record.meta.get("teacher"),
                        "model": record.meta.get("model")},
                meta=dict(record.meta or {}),
            ) for record in store.iter_records(job.id, kind="conversation")]
            unfinished = sum(n for state, n in store.stats(job.id).units.items() if state not in UnitState.FINISHED)
        finally:
            store.close()
        if not found:
            raise JobFileError(label, [f"{option}: job '{ref}' ({job.id}, {job.instructor}) has no conversation "
                                       "records to read"])
        if unfinished:
            log.warning("%s: job '%s' (%s) still has %d unfinished units; using the %d conversations it has now",
                        option, ref, job.id, unfinished, len(found))
        return found


def _missing_sqlite_file(url: str) -> str | None:
    """The file a `sqlite:///PATH` URL names when it does not exist (None for any other URL, or one it cannot
    read: the store reports an unusable URL itself). Read without SQLAlchemy, as its `make_url` reads it."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+")[0] != "sqlite" or not rest.startswith("/"):
        return None
    path = unquote(rest[1:].partition("?")[0])
    if path and path != ":memory:" and not path.startswith("file:") and not Path(path).exists():
        return path
    return None
