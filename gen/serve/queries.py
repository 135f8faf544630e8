"""What the review UI reads, each in a short read-only transaction, so a fleet writing meanwhile is never held up.

Counts and time series are grouped in SQL (they stay cheap on large jobs); distributions that need a record's
JSON (judge scores, turns, tokens) read the newest `SAMPLE` records and say so.
"""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Text, case, cast, func, select
from sqlalchemy.engine import Connection

from gen.store.models import Call, Job, NearDuplicate, Record, Unit, UnitState, utcnow
from gen.store.reviews import latest_reviews, review_history

SAMPLE = 5000          # records read for the JSON-based distributions
PAGE = 50              # records per page in the browser
TOP_REASONS = 10


@contextmanager
def reading(store) -> Iterator[Connection]:
    """A read-only transaction (PostgreSQL: READ ONLY, a statement timeout; SQLite WAL readers never block)."""
    engine = store.engine
    if engine.dialect.name == "postgresql":
        engine = engine.execution_options(postgresql_readonly=True)
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL statement_timeout = '15s'")
        yield conn
        conn.rollback()


def epoch(column, dialect: str):
    """Seconds since 1970 (UTC) of a timestamp column, as SQL."""
    if dialect == "postgresql":
        return func.extract("epoch", column)
    return (func.julianday(column) - 2440587.5) * 86400.0


def _table_exists(conn: Connection, name: str) -> bool:
    from sqlalchemy import inspect

    return inspect(conn).has_table(name)


# jobs page -------------------------------------------------------------------------------------------------
@dataclass
class JobRow:
    id: str
    name: str
    instructor: str
    status: str
    created_at: datetime
    units: dict[str, int]
    records: int = 0
    rejected_records: int = 0
    cost_usd: float = 0.0
    calls: int = 0
    calls_last_minute: int = 0
    rate_limited: int = 0

    @property
    def live(self) -> bool:
        return self.status == "active" and (self.units.get(UnitState.PENDING, 0) + self.units.get(UnitState.RUNNING, 0)) > 0


def jobs_overview(store, only: str | None = None) -> list[JobRow]:
    """Every job (or only the job `only`) with its counts, newest first: grouped counts, one query per table."""
    since = utcnow() - timedelta(seconds=60)

    def mine(query, column):
        return query.where(column == only) if only else query

    with reading(store) as conn:
        jobs = {j.id: JobRow(j.id, j.name, j.instructor, j.status, j.created_at, {s: 0 for s in UnitState.ALL})
                for j in conn.execute(mine(select(Job.id, Job.name, Job.instructor, Job.status, Job.created_at), Job.id)
                                      .order_by(Job.created_at.desc()))}
        for job_id, state, n in conn.execute(mine(select(Unit.job_id, Unit.state, func.count()), Unit.job_id)
                                             .group_by(Unit.job_id, Unit.state)):
            if job_id in jobs:
                jobs[job_id].units[state] = n
        for job_id, kind, n in conn.execute(mine(select(Record.job_id, Record.kind, func.count()), Record.job_id)
                                            .group_by(Record.job_id, Record.kind)):
            if job_id in jobs:
                if kind == "rejected":
                    jobs[job_id].rejected_records += n
                else:
                    jobs[job_id].records += n
        for job_id, calls, limited, cost, recent in conn.execute(mine(select(
                Call.job_id, func.count(), func.coalesce(func.sum(case((Call.status == 429, 1), else_=0)), 0),
                func.coalesce(func.sum(Call.cost_usd), 0.0),
                func.coalesce(func.sum(case((Call.created_at >= since, 1), else_=0)), 0)), Call.job_id)
                .group_by(Call.job_id)):
            if job_id in jobs:
                row = jobs[job_id]
                row.calls, row.rate_limited, row.cost_usd, row.calls_last_minute = calls, int(limited), float(cost), int(recent)
    return list(jobs.values())


def find_job(store, ref: str, *, counts: bool = True) -> JobRow | None:
    """A job by id, or the newest of that name; with `counts`, its units, records, calls and cost too."""
    with reading(store) as conn:
        columns = (Job.id, Job.name, Job.instructor, Job.status, Job.created_at)
        job = conn.execute(select(*columns).where(Job.id == ref)).first() or conn.execute(
            select(*columns).where(Job.name == ref).order_by(Job.created_at.desc()).limit(1)).first()
    if job is None:
        return None
    if counts:
        return jobs_overview(store, only=job.id)[0]
    return JobRow(job.id, job.name, job.instructor, job.status, job.created_at, {s: 0 for s in UnitState.ALL})


# job page: time series ---------------------------------------------------------------------------------------
STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)


def bucket_width(span: float, buckets: int = 60) -> float:
    for step in STEPS:
        if span / step <= buckets:
            return step
    return math.ceil(span / buckets)


@dataclass
class Series:
    """Values per time bucket: x holds each bucket's start (epoch seconds), series name -> values."""
    width: float
    x: list[float] = field(default_factory=list)
    series: dict[str, list[float]] = field(default_factory=dict)


def _bucketed(conn: Connection, column, where, group, value, dialect: str) -> tuple[float, float, dict]:
    """{(bucket, group): value} for the rows matching `where`, bucketed over their own time span."""
    t = epoch(column, dialect)
    lo, hi = conn.execute(select(func.min(t), func.max(t)).where(where)).one()
    if lo is None:
        return 0, 0.0, {}
    width = bucket_width(float(hi) - float(lo))
    b = func.floor((t - float(lo)) / width)
    rows = conn.execute(select(b, group, value).where(where).group_by(b, group))
    return width, float(lo), {(int(r[0]), r[1]): float(r[2] or 0) for r in rows}


def _series(width: float, lo: float, cells: dict, names: list[str], *, cumulative: bool, per_minute: bool = False) -> Series:
    if not cells:
        return Series(width=0)
    last = max(b for b, _ in cells)
    out = Series(width=width, x=[lo + i * width for i in range(last + 1)])
    for name in names:
        values, total = [], 0.0
        for i in range(last + 1):
            v = cells.get((i, name), 0.0)
            if per_minute:
                v = v * 60.0 / width
            total = total + v if cumulative else v
            values.append(round(total, 6))
        out.series[name] = values
    return out


def units_over_time(store, job_id: str) -> Series:
    states = [UnitState.DONE, UnitState.REJECTED, UnitState.FAILED]
    with reading(store) as conn:
        width, lo, cells = _bucketed(conn, Unit.finished_at, (Unit.job_id == job_id) & Unit.finished_at.is_not(None)
                                     & Unit.state.in_(states), Unit.state, func.count(), conn.dialect.name)
    return _series(width, lo, cells, states, cumulative=True)


def calls_over_time(store, job_id: str) -> Series:
    with reading(store) as conn:
        label = case((Call.status == 429, "429s"), else_="other")
        width, lo, cells = _bucketed(conn, Call.created_at, Call.job_id == job_id, label, func.count(),
                                     conn.dialect.name)
    for (b, name), n in list(cells.items()):
        if name == "429s":
            cells[(b, "other")] = cells.get((b, "other"), 0.0) + n
    cells = {(b, "calls/min" if name == "other" else "429s/min"): n for (b, name), n in cells.items()}
    return _series(width, lo, cells, ["calls/min", "429s/min"], cumulative=False, per_minute=True)


def cost_over_time(store, job_id: str) -> Series:
    with reading(store) as conn:
        width, lo, cells = _bucketed(conn, Call.created_at, Call.job_id == job_id, Call.teacher,
                                     func.sum(Call.cost_usd), conn.dialect.name)
    teachers = sorted({name for _, name in cells})
    return _series(width, lo, cells, teachers, cumulative=True)


# job page: distributions --------------------------------------------------------------------------------------
@dataclass
class Distributions:
    sampled: int
    capped: bool
    judge_scores: Counter = field(default_factory=Counter)
    turns: Counter = field(default_factory=Counter)
    tokens: list[int] = field(default_factory=list)


def record_distributions(store, job_id: str, sample: int = SAMPLE) -> Distributions:
    """Judge scores (per judged turn, or a record's single score), exchanges per conversation and tokens per
    record (its calls' prompt + completion tokens), over the job's newest `sample` kept records."""
    with reading(store) as conn:
        rows = conn.execute(select(Record.id, Record.conversation, Record.meta, Record.call_ids)
                            .where(Record.job_id == job_id, Record.kind != "rejected")
                            .order_by(Record.id.desc()).limit(sample + 1)).all()
        capped = len(rows) > sample
        rows = rows[:sample]
        out = Distributions(sampled=len(rows), capped=capped)
        call_ids = sorted({cid for r in rows for cid in (r.call_ids or [])})
        tokens: dict[int, int] = {}
        for i in range(0, len(call_ids), 900):
            chunk = call_ids[i:i + 900]
            tokens.update({cid: int(n or 0) for cid, n in conn.execute(
                select(Call.id, Call.prompt_tokens + Call.completion_tokens).where(Call.id.in_(chunk)))})
    for r in rows:
        meta = r.meta or {}
        for score in judge_scores(meta):
            out.judge_scores[score] += 1
        out.turns[sum(1 for m in r.conversation if m.get("role") == "assistant")] += 1
        if r.call_ids:
            out.tokens.append(sum(tokens.get(cid, 0) for cid in r.call_ids))
    return out


def judge_scores(meta: dict[str, Any]) -> list[int | float]:
    judge = meta.get("judge")
    if isinstance(judge, dict) and isinstance(judge.get("scores"), list):
        return [s for s in judge["scores"] if isinstance(s, (int, float))]
    for key in ("judge_score", "score"):
        if isinstance(meta.get(key), (int, float)) and not isinstance(meta.get(key), bool):
            return [meta[key]]
    return []


_NUMBER = re.compile(r"\d+(\.\d+)?")


def reason_label(text: str) -> str:
    """A reason with its particulars (numbers, quoted text, detail after a newline) folded, so alike reasons group."""
    first = text.strip().splitlines()[0] if text.strip() else "(no reason given)"
    first = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", first)
    first = _NUMBER.sub("N", first)
    return first[:90] + ("…" if len(first) > 90 else "")


def rejection_reasons(store, job_id: str, top: int = TOP_REASONS) -> list[tuple[str, int]]:
    """Why units were rejected or failed, alike reasons grouped, the `top` most common with counts."""
    counts: Counter = Counter()
    with reading(store) as conn:
        for text, state, n in conn.execute(select(Unit.last_error, Unit.state, func.count()).where(
                Unit.job_id == job_id, Unit.state.in_((UnitState.REJECTED, UnitState.FAILED)))
                .group_by(Unit.last_error, Unit.state)):
            prefix = "failed: " if state == UnitState.FAILED else ""
            counts[prefix + reason_label(text or "")] += n
    return counts.most_common(top)


def duplicates_dropped(store, job_id: str) -> list[tuple[str, int]]:
    """Near-duplicates dropped per scope, and records dropped because their key already existed."""
    out: list[tuple[str, int]] = []
    with reading(store) as conn:
        if _table_exists(conn, NearDuplicate.__tablename__):
            out += [(f"near-duplicate: {scope}", n) for scope, n in conn.execute(
                select(NearDuplicate.scope, func.count()).where(NearDuplicate.job_id == job_id)
                .group_by(NearDuplicate.scope).order_by(func.count().desc()))]
        exact = conn.execute(select(func.coalesce(func.sum(Unit.duplicates), 0)).where(Unit.job_id == job_id)).scalar()
    if exact:
        out.append(("same key (exact)", int(exact)))
    return out


def code_check_outcomes(store, job_id: str) -> list[tuple[str, int]]:
    """Kept records by their code check (passed / unchecked ...), and records rejected because code failed."""
    with reading(store) as conn:
        status = Record.meta["code_check"].as_string()
        kept = conn.execute(select(status, func.count()).where(Record.job_id == job_id, Record.kind != "rejected",
                                                               status.is_not(None)).group_by(status)).all()
        failed = conn.execute(select(func.count()).select_from(Record).where(
            Record.job_id == job_id, Record.kind == "rejected",
            Record.meta["rejected_because"].as_string().contains("rejects the code"))).scalar()
    out = [(f"kept: {s}", int(n)) for s, n in sorted(kept)]
    if failed:
        out.append(("rejected: check failed", int(failed)))
    return out


# record browser -----------------------------------------------------------------------------------------------
@dataclass
class RecordFilter:
    kind: str = ""             # "", kept, rejected, pair, or any stored kind
    category: str = ""
    constraint: str = ""
    min_score: float | None = None
    verified: str = ""         # "", yes, no
    code_check: str = ""
    language: str = ""
    q: str = ""
    after: int = 0

    def where(self, job_id: str, dialect: str) -> list:
        m = Record.meta
        clauses = [Record.job_id == job_id, Record.id > self.after]
        if self.kind == "kept":
            clauses.append(Record.kind != "rejected")
        elif self.kind:
            clauses.append(Record.kind == self.kind)
        if self.category:
            clauses.append(m["category"].as_string() == self.category)
        if self.constraint:  # meta.constraints is a list of ids: match one as a JSON string inside it
            clauses.append(cast(m["constraints"], Text).contains(f'"{self.constraint}"', autoescape=True))
        if self.min_score is not None:
            clauses.append(m[("judge", "mean")].as_float() >= self.min_score)
        if self.verified in ("yes", "no"):
            clauses.append(m["verified"].as_boolean() == (self.verified == "yes"))
        if self.code_check:
            clauses.append(m["code_check"].as_string() == self.code_check)
        if self.language:
            clauses.append(m["language"].as_string() == self.language)
        if self.q:
            clauses.append(func.lower(cast(Record.conversation, Text)).contains(self.q.lower(), autoescape=True))
        return clauses

    def query(self, **changes: Any) -> str:
        from urllib.parse import urlencode

        values = {**self.__dict__, **changes}
        return urlencode({k: v for k, v in values.items() if v not in ("", None, 0)})


@dataclass
class RecordRow:
    id: int
    kind: str
    preview: str
    meta: dict[str, Any]
    review: str | None   # the mark in force: exclude / include / None


def browse_records(store, job_id: str, flt: RecordFilter, page: int = PAGE) -> tuple[list[RecordRow], int | None]:
    """One page of records in id order after `flt.after` (keyset paging: the cursor is the last id shown, so page
    1000 costs what page 1 costs); returns the rows and the cursor of the next page, if any."""
    with reading(store) as conn:
        rows = conn.execute(select(Record.id, Record.kind, Record.conversation, Record.meta)
                            .where(*flt.where(job_id, conn.dialect.name)).order_by(Record.id).limit(page + 1)).all()
    more = len(rows) > page
    rows = rows[:page]
    marks = latest_reviews(store, job_id, [r.id for r in rows]) if rows else {}
    out = [RecordRow(r.id, r.kind, _preview(r.conversation), r.meta or {},
                     marks[r.id].action if r.id in marks else None) for r in rows]
    return out, (rows[-1].id if more else None)


def _preview(conversation: list[dict[str, Any]]) -> str:
    for m in conversation:
        if m.get("role") == "user":
            text = " ".join(str(m.get("content", "")).split())
            return text[:160] + ("…" if len(text) > 160 else "")
    return ""


def facets(store, job_id: str, sample: int = 2000) -> dict[str, list[str]]:
    """Values the filters can take, from the newest `sample` records (offered as suggestions)."""
    with reading(store) as conn:
        metas = conn.execute(select(Record.meta, Record.kind).where(Record.job_id == job_id)
                             .order_by(Record.id.desc()).limit(sample)).all()
    found: dict[str, set[str]] = defaultdict(set)
    for meta, kind in metas:
        meta = meta or {}
        found["kind"].add(kind)
        for key in ("category", "code_check", "language"):
            if isinstance(meta.get(key), str):
                found[key].add(meta[key])
        for c in meta.get("constraints") or []:
            if isinstance(c, str):
                found["constraint"].add(c)
    return {k: sorted(v) for k, v in found.items()}


@dataclass
class RecordDetail:
    record: Record
    job_name: str
    calls: list[Call]
    missing_calls: list[int]
    history: list
    review: Any


def record_detail(store, record_id: int) -> RecordDetail | None:
    """A record with its lineage: the calls named by its call_ids, in id (= call) order."""
    with reading(store) as conn:
        row = conn.execute(select(Record.__table__).where(Record.__table__.c.id == record_id)).first()
        if row is None:
            return None
        record = Record.model_validate(dict(row._mapping))
        job_name = conn.execute(select(Job.name).where(Job.id == record.job_id)).scalar() or record.job_id
        ids = list(record.call_ids or [])
        calls = [Call.model_validate(dict(r._mapping)) for r in conn.execute(
            select(Call.__table__).where(Call.__table__.c.id.in_(ids)).order_by(Call.__table__.c.id))] if ids else []
    found = {c.id for c in calls}
    history = review_history(store, record_id)
    return RecordDetail(record, job_name, calls, [i for i in ids if i not in found], history,
                        history[-1] if history else None)


def sample_records(store, job_id: str, n: int) -> list[Record]:
    """Up to n kept and n // 4 rejected records, spread over the job (for `gen report`)."""
    out: list[Record] = []
    with reading(store) as conn:
        for kept, limit in ((True, n), (False, max(1, n // 4))):
            cond = Record.kind != "rejected" if kept else Record.kind == "rejected"
            ids = [i for (i,) in conn.execute(select(Record.id).where(Record.job_id == job_id, cond)
                                              .order_by(Record.id))]
            step = max(1, len(ids) // limit) if ids else 1
            chosen = ids[::step][:limit]
            if chosen:
                out += [Record.model_validate(dict(r._mapping)) for r in conn.execute(
                    select(Record.__table__).where(Record.__table__.c.id.in_(chosen)).order_by(Record.__table__.c.id))]
    return out


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)

