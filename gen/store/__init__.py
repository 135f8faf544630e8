"""Persistence: SQLModel over SQLite (embedded default) or PostgreSQL."""
from gen.store.models import Call, Job, Record, Unit, UnitState
from gen.store.store import JobStats, NewRecord, Store

__all__ = ["Store", "NewRecord", "JobStats", "Job", "Unit", "Call", "Record", "UnitState"]
