"""Which job and unit a teacher request belongs to, carried by a context variable.

The unit's journal (gen.core.journal) sets it around each exchange, so the batching provider can name the
request (job, unit, request body) without instructors or `TeacherClient` knowing about batches.
"""
from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class UnitScope:
    store: Any  # gen.store.Store (not imported: this module sits below the store in the import order)
    job_id: str
    unit_id: int


CURRENT_UNIT: contextvars.ContextVar[UnitScope | None] = contextvars.ContextVar("gen_current_unit", default=None)
