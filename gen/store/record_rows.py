"""Records as light read-only rows, for reading many of them fast (`Store.iter_record_rows`, used by export).

A row is a tuple (id, key, kind, conversation, meta, screen) read with SQLAlchemy Core, its JSON columns fetched as text
and decoded here: no ORM object, no pydantic model per row. Decoding gives the very objects the ORM's JSON type
gives (it uses json.loads): orjson where it can, json.loads for what orjson refuses (NaN, huge numbers, lone
surrogates), so nothing read this way differs from `Store.iter_records`.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Text, cast, select

from gen.store.models import Record

_RECORDS = Record.__table__


class RecordRow(NamedTuple):
    id: int
    key: str
    kind: str
    conversation: Any
    meta: Any
    screen: str | None  # what the checks run when it was stored found (gen.record_screen)


def decode(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def page_query(job_id: str, *, kind: str | None, after: int, limit: int, ids: list[int] | None = None):
    c = _RECORDS.c
    q = select(c.id, c.key, c.kind, cast(c.conversation, Text), cast(c.meta, Text), c.screen) \
        .where(c.job_id == job_id, c.id > after)
    if kind:
        q = q.where(c.kind == kind)
    if ids is not None:
        q = q.where(c.id.in_(ids))
    return q.order_by(c.id).limit(limit)


def decoded(rows) -> Iterator[RecordRow]:
    """The rows of a page query (fetched at once), decoded one at a time as they are taken."""
    for rid, key, kind, conversation, meta, screen in rows:
        yield RecordRow(rid, key, kind, decode(conversation), decode(meta), screen)
