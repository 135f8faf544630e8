"""What the jobs page and a job's plots show: counts grouped in SQL (cheap on large jobs), time series bucketed
in SQL, and distributions that need a record's JSON (judge scores, turns, tokens) over the newest `SAMPLE` records.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.engine import Connection

from gen.serve.reading import epoch, reading, table_exists
from gen.store.models import Call, Job, NearDuplicate, Record, Unit, UnitState, utcnow

SAMPLE = 5000          # records read for the JSON-based distributions
TOP_REASONS = 10


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
        if table_exists(conn, NearDuplicate.__tablename__):
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
