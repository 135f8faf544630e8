"""Provider batches in the database, so a submitted batch survives the process that sent it.

`batch_requests`: one row per request, keyed by its `custom_id`, holding the JSONL line to send; `identity` names
the call (job, unit, request) so whoever runs the unit next finds the request already queued or submitted and
waits for its answer instead of sending it again. States: queued -> submitting -> submitted -> answered | failed
-> consumed (submitting -> queued again when a crashed submitter's batch never reached the provider).
`batch_submissions`: one row per batch. It is written *before* the provider is called, as an intent (status
`submitting`, id `pending-<marker>`, `marker` the uuid the batch carries in its metadata), and takes the
provider's batch id once the provider answers; then `submitted` -> completed | failed | cancelled.
`batch_submitters`: the lease naming the one process of the fleet that gathers and submits a (job, teacher)'s
queued requests. Polling a batch is leased on its row: claiming a due poll moves `next_poll_at` past the poll.

Plain functions with keyword-only arguments; each is one short transaction.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Optional

from sqlalchemy import Column, Text, delete, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, select

from gen.store.models import Job, utcnow
from gen.store.states import JobState

if TYPE_CHECKING:  # pragma: no cover
    from gen.store.store import Store


class BatchSubmission(SQLModel, table=True):
    __tablename__ = "batch_submissions"
    id: str = Field(primary_key=True, max_length=128)          # the provider's batch id (pending-<marker> before)
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
    marker: Optional[str] = Field(default=None, index=True, max_length=64)  # metadata gen_submission
    holder: Optional[str] = Field(default=None, max_length=128)  # the submitter of a `submitting` intent


class BatchSubmitter(SQLModel, table=True):
    __tablename__ = "batch_submitters"
    job_id: str = Field(primary_key=True, max_length=32)
    teacher: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=128)
    until: datetime


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
    line: Optional[str] = Field(default=None, sa_column=Column(Text))  # the JSONL line sent to the provider


OPEN_STATES = ("queued", "submitting", "submitted", "answered", "failed")
SETTLED_STATES = ("answered", "failed")
POLLED_STATES = ("submitted", "cancelled")  # a cancelled batch is polled once more for what it finished


def pending_id(marker: str) -> str:
    return f"pending-{marker}"


def queue_request(store: "Store", *, custom_id: str, identity: str, job_id: str, unit_id: int, teacher: str,
                  line: str | None = None) -> None:
    with store.session() as s:
        s.add(BatchRequest(custom_id=custom_id, identity=identity, job_id=job_id, unit_id=unit_id, teacher=teacher,
                           line=line))
        s.commit()


def open_requests(store: "Store", *, identity: str) -> list[tuple[str, str, Optional[str], Optional[str]]]:
    """(custom_id, state, batch_id, result) of the identity's queued or submitted but unused requests, oldest
    first."""
    with store.session() as s:
        rows = s.exec(select(BatchRequest.custom_id, BatchRequest.state, BatchRequest.batch_id,
                             BatchRequest.result)
                      .where(BatchRequest.identity == identity, BatchRequest.state.in_(OPEN_STATES))
                      .order_by(BatchRequest.created_at, BatchRequest.custom_id)).all()
        return [tuple(r) for r in rows]


def note_poll(store: "Store", *, batch_id: str, next_poll_in: float) -> None:
    with store.session() as s:
        s.execute(update(BatchSubmission).where(BatchSubmission.id == batch_id)
               .values(next_poll_at=utcnow() + timedelta(seconds=next_poll_in)))
        s.commit()


def record_results(store: "Store", *, batch_id: str, status: str, results: dict[str, tuple[bool, str]],
                   missing: str | None = None) -> None:
    """A finished batch: each request answered (True, body) or failed (False, reason); requests of the batch
    with no line are failed with `missing` (expired, cancelled)."""
    with store.session() as s:
        rows = s.exec(select(BatchRequest).where(BatchRequest.batch_id == batch_id,
                                                 BatchRequest.state == "submitted")).all()
        answered = failed = 0
        for row in rows:
            ok, text = results.get(row.custom_id, (False, missing or f"no result in batch {batch_id} ({status})"))
            row.state, row.result = ("answered" if ok else "failed"), text
            answered, failed = answered + ok, failed + (not ok)
            s.add(row)
        s.execute(update(BatchSubmission).where(BatchSubmission.id == batch_id)
               .values(status=status, answered=answered, failed=failed, finished_at=utcnow(),
                       next_poll_at=None))
        s.commit()


def consume(store: "Store", *, custom_id: str) -> None:
    """The answer was handed to its unit (it is in the journal from now on)."""
    with store.session() as s:
        s.execute(update(BatchRequest).where(BatchRequest.custom_id == custom_id).values(state="consumed"))
        s.commit()


def submissions(store: "Store", *, job_id: str, in_flight_only: bool = False) -> list[BatchSubmission]:
    with store.session() as s:
        query = select(BatchSubmission).where(BatchSubmission.job_id == job_id)
        query = query.where(BatchSubmission.status != "submitting")  # intents are not batches yet
        if in_flight_only:
            query = query.where(BatchSubmission.status == "submitted")
        return list(s.exec(query.order_by(BatchSubmission.created_at)).all())


def mark_cancelled(store: "Store", *, batch_id: str) -> None:
    """Cancelled at the provider: due for one more poll, which collects what the batch finished before."""
    with store.session() as s:
        s.execute(update(BatchSubmission).where(BatchSubmission.id == batch_id)
               .values(status="cancelled", finished_at=utcnow(), next_poll_at=utcnow()))
        s.commit()


# -- the fleet's submitter and pollers ---------------------------------------------------------------------------
def take_submitter(store: "Store", *, job_id: str, teacher: str, holder: str, seconds: float) -> bool:
    """Hold (or keep holding) the (job, teacher) submitter lease for `seconds`; False while another holds it."""
    now = utcnow()
    with store.session() as s:
        result = s.execute(update(BatchSubmitter).where(
            BatchSubmitter.job_id == job_id, BatchSubmitter.teacher == teacher,
            (BatchSubmitter.holder == holder) | (BatchSubmitter.until < now))
            .values(holder=holder, until=now + timedelta(seconds=seconds)))
        s.commit()
        if result.rowcount:
            return True
    try:
        with store.session() as s:
            s.add(BatchSubmitter(job_id=job_id, teacher=teacher, holder=holder, until=now + timedelta(seconds=seconds)))
            s.commit()
        return True
    except IntegrityError:  # held by another process (or it inserted the row first)
        return False


def release_submitter(store: "Store", *, job_id: str, teacher: str, holder: str) -> None:
    with store.session() as s:
        s.execute(delete(BatchSubmitter).where(BatchSubmitter.job_id == job_id, BatchSubmitter.teacher == teacher,
                                               BatchSubmitter.holder == holder))
        s.commit()


def queued_summary(store: "Store", *, job_id: str, teacher: str) -> tuple[int, Optional[datetime]]:
    """How many of the (job, teacher)'s requests wait to be sent, and when the oldest was queued."""
    with store.session() as s:
        count, oldest = s.exec(select(func.count(), func.min(BatchRequest.created_at)).where(
            BatchRequest.job_id == job_id, BatchRequest.teacher == teacher, BatchRequest.state == "queued")).one()
        return int(count), oldest


def open_intent(store: "Store", *, job_id: str, teacher: str, provider: str, holder: str, marker: str,
                max_requests: int, max_bytes: int, lease_seconds: float) -> Optional[list[tuple[str, str]]]:
    """Take the oldest queued requests (up to the limits) into a `submitting` intent, before anything is sent;
    their (custom_id, line). None when the lease was lost (nothing is taken); [] when nothing is queued."""
    now = utcnow()
    with store.session() as s:
        held = s.execute(update(BatchSubmitter).where(
            BatchSubmitter.job_id == job_id, BatchSubmitter.teacher == teacher, BatchSubmitter.holder == holder)
            .values(until=now + timedelta(seconds=lease_seconds)))
        if not held.rowcount:
            s.rollback()
            return None
        rows = s.exec(select(BatchRequest.custom_id, BatchRequest.line).where(
            BatchRequest.job_id == job_id, BatchRequest.teacher == teacher, BatchRequest.state == "queued")
            .order_by(BatchRequest.created_at, BatchRequest.custom_id).limit(max_requests)).all()
        chunk, size = [], 0
        for custom_id, line in rows:
            line = line or ""
            if chunk and size + len(line.encode("utf-8")) > max_bytes:
                break
            chunk.append((custom_id, line))
            size += len(line.encode("utf-8"))
        if chunk:
            s.add(BatchSubmission(id=pending_id(marker), job_id=job_id, teacher=teacher, provider=provider,
                                  status="submitting", requests=len(chunk), marker=marker, holder=holder))
            s.execute(update(BatchRequest).where(BatchRequest.custom_id.in_([c for c, _ in chunk]))
                      .values(batch_id=pending_id(marker), state="submitting"))
        s.commit()
        return chunk


GONE, RECORDED, JOB_CANCELLED = "gone", "recorded", "job cancelled"


def record_created(store: "Store", *, marker: str, batch_id: str, next_poll_in: float) -> str:
    """The provider created the intent's batch: the intent becomes the batch, its requests submitted to it.
    GONE when the intent is gone (another submitter resolved it meanwhile): nothing is written. JOB_CANCELLED when
    it is recorded but its job was cancelled meanwhile: `gen cancel` listed the job's batches before this one
    was recorded, so the caller cancels it. (The job's row is read under a lock after the write: a cancel either
    committed before it, and is seen, or waits for this commit and then lists this batch.)"""
    with store.session() as s:
        moved = s.execute(update(BatchSubmission).where(BatchSubmission.id == pending_id(marker),
                                                        BatchSubmission.status == "submitting")
                          .values(id=batch_id, status="submitted", holder=None, created_at=utcnow(),
                                  next_poll_at=utcnow() + timedelta(seconds=next_poll_in)))
        if not moved.rowcount:
            s.rollback()
            return GONE
        s.execute(update(BatchRequest).where(BatchRequest.batch_id == pending_id(marker))
                  .values(batch_id=batch_id, state="submitted"))
        job_id = s.exec(select(BatchSubmission.job_id).where(BatchSubmission.id == batch_id)).one()
        status = s.exec(select(Job.status).where(Job.id == job_id).with_for_update(read=True)).first()
        s.commit()
        return JOB_CANCELLED if status == JobState.CANCELLED else RECORDED


def drop_intent(store: "Store", *, marker: str, failed: Optional[str] = None) -> None:
    """The intent's batch does not exist at the provider: its requests are queued again, or failed with
    `failed` (the provider refused them; the unit retries them like an online call)."""
    with store.session() as s:
        values = {"state": "failed", "result": failed} if failed else {"state": "queued"}
        s.execute(update(BatchRequest).where(BatchRequest.batch_id == pending_id(marker))
                  .values(batch_id=None, **values))
        s.execute(delete(BatchSubmission).where(BatchSubmission.id == pending_id(marker)))
        s.commit()


def orphan_intent(store: "Store", *, marker: str) -> None:
    """Whether the intent's batch exists is not known yet: left for the submitter's recovery to find out."""
    with store.session() as s:
        s.execute(update(BatchSubmission).where(BatchSubmission.id == pending_id(marker)).values(holder=None))
        s.commit()


def foreign_intents(store: "Store", *, job_id: str, teacher: str, holder: str) -> list[tuple[str, datetime]]:
    """(marker, created_at) of intents left by another submitter (killed, or its lease lost) or orphaned."""
    with store.session() as s:
        rows = s.exec(select(BatchSubmission.marker, BatchSubmission.created_at).where(
            BatchSubmission.job_id == job_id, BatchSubmission.teacher == teacher,
            BatchSubmission.status == "submitting",
            (BatchSubmission.holder == None) | (BatchSubmission.holder != holder))).all()  # noqa: E711
        return [(m, c) for m, c in rows if m]


def claim_polls(store: "Store", *, job_id: str, teacher: str, hold_seconds: float) -> list[tuple[str, datetime]]:
    """The (job, teacher)'s batches due for a poll, claimed by this caller: each one's next poll moves
    `hold_seconds` ahead, so no other process polls it meanwhile (nor after the caller dies, for long)."""
    now = utcnow()
    claimed = []
    with store.session() as s:
        due = s.exec(select(BatchSubmission.id, BatchSubmission.created_at).where(
            BatchSubmission.job_id == job_id, BatchSubmission.teacher == teacher,
            BatchSubmission.status.in_(POLLED_STATES), BatchSubmission.next_poll_at != None,  # noqa: E711
            BatchSubmission.next_poll_at <= now)).all()
        for batch_id, created_at in due:
            result = s.execute(update(BatchSubmission).where(
                BatchSubmission.id == batch_id, BatchSubmission.next_poll_at <= now)
                .values(next_poll_at=now + timedelta(seconds=hold_seconds)))
            s.commit()
            if result.rowcount:
                claimed.append((batch_id, created_at))
    return claimed


def settled_requests(store: "Store", *, custom_ids: list[str]) -> dict[str, tuple[str, Optional[str]]]:
    """custom_id -> (state, result) of those requests that are answered or failed."""
    found: dict[str, tuple[str, Optional[str]]] = {}
    with store.session() as s:
        for start in range(0, len(custom_ids), 500):
            rows = s.exec(select(BatchRequest.custom_id, BatchRequest.state, BatchRequest.result).where(
                BatchRequest.custom_id.in_(custom_ids[start:start + 500]),
                BatchRequest.state.in_(SETTLED_STATES))).all()
            found.update({c: (state, result) for c, state, result in rows})
    return found


__all__ = ["BatchSubmission", "BatchRequest", "BatchSubmitter", "queue_request", "open_requests",
           "note_poll", "record_results", "consume",
           "submissions", "mark_cancelled", "take_submitter", "release_submitter", "queued_summary", "open_intent",
           "record_created", "GONE", "RECORDED", "JOB_CANCELLED", "drop_intent", "orphan_intent", "foreign_intents",
           "claim_polls", "settled_requests"]
