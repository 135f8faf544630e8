"""What the record browser and a record's page show: keyset pages of a job's records under filters, and a record
with its lineage (the calls that made it) and review marks."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, cast, func, select

from gen.serve.reading import reading
from gen.store.models import Call, Job, Record
from gen.store.reviews import latest_reviews, review_history

PAGE = 50              # records per page


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

    def where(self, job_id: str) -> list:
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
                            .where(*flt.where(job_id)).order_by(Record.id).limit(page + 1)).all()
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
