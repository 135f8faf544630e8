"""Read-only transactions for the review UI, so a fleet writing meanwhile is never held up; SQL helpers."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import func, inspect
from sqlalchemy.engine import Connection


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


def table_exists(conn: Connection, name: str) -> bool:
    return inspect(conn).has_table(name)
