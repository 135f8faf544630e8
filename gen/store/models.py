"""The tables. The database is the source of truth for every job and unit; keys never reach it."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from gen.store.states import JobState, UnitState
from gen.store.types import StoredText  # NUL-safe on PostgreSQL; error columns scrubbed of secrets


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Meta(SQLModel, table=True):
    __tablename__ = "gen_meta"
    key: str = Field(primary_key=True, max_length=64)
    value: str


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(index=True, max_length=64)
    instructor: str = Field(max_length=64)
    spec: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    spec_hash: str = Field(max_length=64)
    status: str = Field(default=JobState.ACTIVE, max_length=32)  # gen.store.states.JobState
    queue: str = Field(default="gen", max_length=64)
    status_reason: Optional[str] = Field(default=None, sa_column=Column(StoredText(scrubbed=True)))
    unit_count: int = 0  # units planned so far (all of them once planning_done)
    planned_units: int = 0  # how far the instructor's plan has been read (planning resumes from here)
    planning_done: bool = True
    driver: Optional[str] = Field(default=None, max_length=128)  # the `gen run` process holding the job (pid@host)
    driver_until: Optional[datetime] = None  # ...while this is in the future (renewed by its heartbeat)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Unit(SQLModel, table=True):
    __tablename__ = "units"
    __table_args__ = (UniqueConstraint("job_id", "key"), Index("ix_units_job_state", "job_id", "state"),
                      Index("ix_units_job_seq", "job_id", "seq"))
    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", max_length=32)
    seq: int = 0
    key: str = Field(max_length=200)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    state: str = Field(default=UnitState.PENDING, max_length=16)
    attempts: int = 0
    duplicates: int = 0
    last_error: Optional[str] = Field(default=None, sa_column=Column(StoredText(scrubbed=True)))
    raw_output: Optional[str] = Field(default=None, sa_column=Column(StoredText(scrubbed=True)))
    worker: Optional[str] = Field(default=None, max_length=128)
    lease_until: Optional[datetime] = None  # a running unit whose lease has passed was lost with its worker
    lease_token: int = 0  # raised by every claim: writes for the unit carry it, so a worker that lost it writes nothing
    dispatched_at: Optional[datetime] = None  # when a message for the unit was last sent to the queue
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None


class Call(SQLModel, table=True):
    """Every teacher call: request, answer, status, latency, tokens, cost. Never a key."""

    __tablename__ = "calls"
    __table_args__ = (Index("ix_calls_unit_key", "unit_id", "request_key"), Index("ix_calls_job", "job_id"))
    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: str = Field(max_length=32)
    unit_id: int = Field(foreign_key="units.id")
    teacher: str = Field(max_length=64)
    model: str = Field(max_length=200)
    params: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    messages: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    request_key: str = Field(max_length=64)
    occurrence: int = 0
    attempt: int = 1
    status: Optional[int] = None
    text: Optional[str] = Field(default=None, sa_column=Column(StoredText))
    finish_reason: Optional[str] = Field(default=None, max_length=32)
    latency_ms: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    error: Optional[str] = Field(default=None, sa_column=Column(StoredText(scrubbed=True)))
    error_kind: Optional[str] = Field(default=None, max_length=64)
    accepted: Optional[bool] = None
    reject_reason: Optional[str] = Field(default=None, sa_column=Column(StoredText(scrubbed=True)))
    created_at: datetime = Field(default_factory=utcnow)


class Record(SQLModel, table=True):
    """A validated conversation. `key` is unique per job, so no retry or rerun can store one twice."""

    __tablename__ = "records"
    __table_args__ = (UniqueConstraint("job_id", "key"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", max_length=32, index=True)
    unit_id: int = Field(foreign_key="units.id")
    key: str = Field(max_length=200)
    kind: str = Field(default="conversation", max_length=32)
    conversation: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    call_ids: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # the checks run when it was stored and what they found (gen.record_screen); None: stored by an earlier gen
    screen: Optional[str] = Field(default=None, sa_column=Column(StoredText(), nullable=True))
    created_at: datetime = Field(default_factory=utcnow)


class NearDupSignature(SQLModel, table=True):
    """A MinHash signature of one generated text (gen.neardup), per job and scope (e.g. riddles, coding:python)."""

    __tablename__ = "neardup_signatures"
    __table_args__ = (UniqueConstraint("job_id", "scope", "item_key"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", max_length=32)
    scope: str = Field(max_length=100)
    item_key: str = Field(max_length=200)
    signature: list[int] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class NearDupBand(SQLModel, table=True):
    """One LSH band of a signature. Unique per (job, scope, band, hash): the first text to insert a band owns it,
    and whoever inserts a colliding band later sees the collision and compares signatures."""

    __tablename__ = "neardup_bands"
    __table_args__ = (UniqueConstraint("job_id", "scope", "band", "band_hash"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", max_length=32)
    scope: str = Field(max_length=100)
    band: int
    band_hash: str = Field(max_length=40)
    item_key: str = Field(max_length=200)


class NearDuplicate(SQLModel, table=True):
    """A generated text dropped as a near-duplicate of an earlier one: what `gen status` counts."""

    __tablename__ = "near_duplicates"
    __table_args__ = (UniqueConstraint("job_id", "scope", "item_key"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", max_length=32)
    scope: str = Field(max_length=100)
    item_key: str = Field(max_length=200)
    duplicate_of: str = Field(max_length=200)
    similarity: float = 0.0
    text: str = Field(sa_column=Column(StoredText, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
