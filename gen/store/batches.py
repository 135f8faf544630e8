"""Provider batches in the database, so a submitted batch survives the process that sent it.

`batch_submissions`: one row per batch created at a provider (its id, teacher, counts, when to poll next).
`batch_requests`: one row per request put into a batch, keyed by its `custom_id`; `identity` names the call
(job, unit, request) so whoever runs the unit next finds the request already submitted and waits for that
batch's answer instead of sending it again. States: queued -> submitted -> answered | failed -> consumed.

Plain functions with keyword-only arguments; each is one short transaction.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Optional

from sqlalchemy import Column, Text, update
from sqlmodel import Field, SQLModel, select

from gen.store.models import utcnow

if TYPE_CHECKING:  # pragma: no cover
    from gen.store.store import Store


class BatchSubmission(SQLModel, table=True):
    __tablename__ = "batch_submissions"
    id: str = Field(primary_key=True, max_length=128)          # the provider's batch id
    job_id: str = Field(index=True, max_length=32)
    teacher: str = Field(max_length=64)
    provider: str = Field(max_length=32)
    status: str = Field(default="submitted", max_length=32)    # submitted | completed | failed | cancelled
    requests: int = 0
    answered: int = 0
    failed: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    next_poll_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None


class BatchRequest(SQLModel, table=True):
    __tablename__ = "batch_requests"
    custom_id: str = Field(primary_key=True, max_length=64)
    identity: str = Field(index=True, max_length=64)
    job_id: str = Field(index=True, max_length=32)
    unit_id: int = 0
    teacher: str = Field(max_length=64)
    batch_id: Optional[str] = Field(default=None, index=True, max_length=128)
    state: str = Field(default="queued", max_length=16)
    result: Optional[str] = Field(default=None, sa_column=Column(Text))  # the response body, or the error
    created_at: datetime = Field(default_factory=utcnow)


OPEN_STATES = ("submitted", "answered", "failed")


def queue_request(store: "Store", *, custom_id: str, identity: str, job_id: str, unit_id: int, teacher: str) -> None:
    with store.session() as s:
        s.add(BatchRequest(custom_id=custom_id, identity=identity, job_id=job_id, unit_id=unit_id, teacher=teacher))
        s.commit()


def count_identity(store: "Store", *, identity: str) -> int:
    with store.session() as s:
        return len(s.exec(select(BatchRequest.custom_id).where(BatchRequest.identity == identity)).all())


def open_requests(store: "Store", *, identity: str) -> list[tuple[str, str, Optional[str], Optional[str]]]:
    """(custom_id, state, batch_id, result) of the identity's submitted-but-unused requests, oldest first."""
    with store.session() as s:
        rows = s.exec(select(BatchRequest.custom_id, BatchRequest.state, BatchRequest.batch_id,
                             BatchRequest.result)
                      .where(BatchRequest.identity == identity, BatchRequest.state.in_(OPEN_STATES))
                      .order_by(BatchRequest.created_at, BatchRequest.custom_id)).all()
        return [tuple(r) for r in rows]


def record_submission(store: "Store", *, batch_id: str, job_id: str, teacher: str, provider: str,
                      custom_ids: list[str], next_poll_in: float) -> None:
    """The batch and its requests, in one transaction."""
    with store.session() as s:
        s.add(BatchSubmission(id=batch_id, job_id=job_id, teacher=teacher, provider=provider,
                              requests=len(custom_ids),
                              next_poll_at=utcnow() + timedelta(seconds=next_poll_in)))
        s.execute(update(BatchRequest).where(BatchRequest.custom_id.in_(custom_ids))
               .values(batch_id=batch_id, state="submitted"))
        s.commit()


def batch_status(store: "Store", *, batch_id: str) -> Optional[str]:
    with store.session() as s:
        row = s.get(BatchSubmission, batch_id)
        return row.status if row else None


def note_poll(store: "Store", *, batch_id: str, next_poll_in: float) -> None:
    with store.session() as s:
        s.execute(update(BatchSubmission).where(BatchSubmission.id == batch_id)
               .values(next_poll_at=utcnow() + timedelta(seconds=next_poll_in)))
        s.commit()


def record_results(store: "Store", *, batch_id: str, status: str, results: dict[str, tuple[bool, str]]) -> None:
    """A finished batch: each request answered (True, body) or failed (False, reason); requests of the batch
    with no line are failed (expired, cancelled)."""
    with store.session() as s:
        rows = s.exec(select(BatchRequest).where(BatchRequest.batch_id == batch_id,
                                                 BatchRequest.state == "submitted")).all()
        answered = failed = 0
        for row in rows:
            ok, text = results.get(row.custom_id, (False, f"no result in batch {batch_id} ({status})"))
            row.state, row.result = ("answered" if ok else "failed"), text
            answered, failed = answered + ok, failed + (not ok)
            s.add(row)
        s.execute(update(BatchSubmission).where(BatchSubmission.id == batch_id)
               .values(status=status, answered=answered, failed=failed, finished_at=utcnow(),
                       next_poll_at=None))
        s.commit()


def request_result(store: "Store", *, custom_id: str) -> tuple[str, Optional[str]] | None:
    with store.session() as s:
        row = s.get(BatchRequest, custom_id)
        return (row.state, row.result) if row else None


def consume(store: "Store", *, custom_id: str) -> None:
    """The answer was handed to its unit (it is in the journal from now on)."""
    with store.session() as s:
        s.execute(update(BatchRequest).where(BatchRequest.custom_id == custom_id).values(state="consumed"))
        s.commit()


def submissions(store: "Store", *, job_id: str, in_flight_only: bool = False) -> list[BatchSubmission]:
    with store.session() as s:
        query = select(BatchSubmission).where(BatchSubmission.job_id == job_id)
        if in_flight_only:
            query = query.where(BatchSubmission.status == "submitted")
        return list(s.exec(query.order_by(BatchSubmission.created_at)).all())


def mark_cancelled(store: "Store", *, batch_id: str) -> None:
    with store.session() as s:
        s.execute(update(BatchSubmission).where(BatchSubmission.id == batch_id)
               .values(status="cancelled", finished_at=utcnow(), next_poll_at=None))
        s.commit()


__all__ = ["BatchSubmission", "BatchRequest", "queue_request", "count_identity", "open_requests",
           "record_submission", "batch_status", "note_poll", "record_results", "request_result", "consume",
           "submissions", "mark_cancelled"]
