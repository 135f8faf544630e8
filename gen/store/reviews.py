"""Human review marks: a record excluded from export (with a reason) or a rejected one re-included.

The table is an append-only audit: every mark is a new row (who, when, why) and the newest row of a record
decides. `gen export` reads the outcome through `review_overrides`; `gen serve` writes marks with `add_review`.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Optional

from sqlalchemy import Column, Index, Text, func, inspect
from sqlmodel import Field, SQLModel, select

from gen.errors import UsageError
from gen.store.models import Record, utcnow
from gen.store.record_rows import RecordRow


class ReviewAction:
    EXCLUDE = "exclude"   # a kept record stays out of `gen export`
    INCLUDE = "include"   # a rejected record goes into `gen export` (or an exclusion is taken back)
    ALL = (EXCLUDE, INCLUDE)


class RecordReview(SQLModel, table=True):
    """One human mark on one record. Rows are only ever added."""

    __tablename__ = "record_reviews"
    __table_args__ = (Index("ix_record_reviews_job_record", "job_id", "record_id", "id"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: str = Field(max_length=32)
    record_id: int = Field(foreign_key="records.id")
    action: str = Field(max_length=16)
    reason: Optional[str] = Field(default=None, sa_column=Column(Text))
    who: str = Field(max_length=128)
    created_at: datetime = Field(default_factory=utcnow)


def _has_table(store) -> bool:
    return inspect(store.engine).has_table(RecordReview.__tablename__)


def add_review(store, *, record_id: int, action: str, reason: str | None, who: str) -> RecordReview:
    """Append one mark: a single short INSERT, so it never holds a lock a worker waits on."""
    if action not in ReviewAction.ALL:
        raise UsageError(f"unknown review action '{action}' (known: {', '.join(ReviewAction.ALL)})")
    reason = (reason or "").strip() or None
    if action == ReviewAction.EXCLUDE and not reason:
        raise UsageError("excluding a record needs a reason")
    with store.autocommit.connect() as conn:
        job_id = conn.execute(select(Record.__table__.c.job_id).where(Record.__table__.c.id == record_id)).scalar()
        if job_id is None:
            raise UsageError(f"no record {record_id}")
        row = {"job_id": job_id, "record_id": record_id, "action": action, "reason": reason, "who": who[:128],
               "created_at": utcnow()}
        new_id = conn.execute(RecordReview.__table__.insert().returning(RecordReview.__table__.c.id),
                              row).scalar_one()
    return RecordReview(id=new_id, **row)


def _latest(job_id: str, record_ids: Iterable[int] | None = None):
    t = RecordReview.__table__
    newest = select(func.max(t.c.id)).where(t.c.job_id == job_id)
    if record_ids is not None:
        newest = newest.where(t.c.record_id.in_(list(record_ids)))
    return select(t).where(t.c.id.in_(newest.group_by(t.c.record_id)))


def latest_reviews(store, job_id: str, record_ids: Iterable[int] | None = None) -> dict[int, RecordReview]:
    """The mark in force for each reviewed record of a job (optionally only these records)."""
    if not _has_table(store):
        return {}
    with store.engine.connect() as conn:
        return {row.record_id: RecordReview.model_validate(dict(row._mapping))
                for row in conn.execute(_latest(job_id, record_ids))}


def review_history(store, record_id: int) -> list[RecordReview]:
    """Every mark on one record, oldest first: the audit trail the record page shows."""
    if not _has_table(store):
        return []
    t = RecordReview.__table__
    with store.engine.connect() as conn:
        return [RecordReview.model_validate(dict(r._mapping))
                for r in conn.execute(select(t).where(t.c.record_id == record_id).order_by(t.c.id))]


def review_overrides(store, job_id: str) -> tuple[set[int], set[int]]:
    """(excluded_ids, included_ids): records whose newest mark excludes them, and records whose newest mark
    includes them (what matters for rejected records, which export otherwise leaves out)."""
    excluded: set[int] = set()
    included: set[int] = set()
    for record_id, review in latest_reviews(store, job_id).items():
        (excluded if review.action == ReviewAction.EXCLUDE else included).add(record_id)
    return excluded, included


def reviewed_records(store, job_id: str, records: Iterator[RecordRow], *, kind: str,
                     rejected: bool) -> Iterator[RecordRow]:
    """`records` (a job's records of `kind`, or its rejected ones, as `Store.iter_record_rows` reads them) with
    the human marks applied.

    Normal export: excluded records are left out, and rejected records re-included by a reviewer follow (for
    conversation formats; a rejected pair has no winner to export). `rejected` export: re-included records
    have left the rejected set."""
    excluded, included = review_overrides(store, job_id)
    if rejected:
        yield from (r for r in records if r.id not in included)
        return
    yield from (r for r in records if r.id not in excluded) if excluded else records
    if kind != "conversation" or not included:
        return
    yield from store.iter_record_rows(job_id, kind="rejected", ids=included)
