"""Schema changes as named, ordered, append-only migrations, each recorded in `gen_migrations` when applied.

A new database gets every table from the models at once and every migration recorded as applied. An older one
(made by an earlier gen) gets the migrations it lacks, in order, in the same transaction as the check. A database
that records a migration this gen does not know was made by a newer gen, and is refused with a clear message.

Append only: never edit or reorder a migration that has shipped; add the next one, and change the models to match
(tests/test_migrations.py checks that an upgraded database has exactly the columns of a new one).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Column, DateTime, MetaData, String, Table, inspect, select
from sqlalchemy.engine import Connection

from gen.errors import StoreError


@dataclass(frozen=True)
class Migration:
    name: str
    apply: Callable[[Connection], None]


MIGRATION_TABLE = Table("gen_migrations", MetaData(), Column("name", String(100), primary_key=True),
                        Column("applied_at", DateTime(timezone=False), nullable=False))


def register_tables() -> None:
    """Every table gen has, registered with SQLModel's metadata (the models live in three modules)."""
    import gen.store.batches  # noqa: F401
    import gen.store.models  # noqa: F401
    import gen.store.reviews  # noqa: F401


def _create_model_tables(*names: str) -> Callable[[Connection], None]:
    def apply(conn: Connection) -> None:
        from sqlmodel import SQLModel

        register_tables()

        for name in names:
            SQLModel.metadata.tables[name].create(conn, checkfirst=True)
    return apply


def _add_columns(table: str, columns: dict[str, tuple[str, str]]) -> Callable[[Connection], None]:
    """columns: name -> (SQLite type and default, PostgreSQL type and default)."""
    def apply(conn: Connection) -> None:
        have = {c["name"] for c in inspect(conn).get_columns(table)}
        for name, (sqlite_type, pg_type) in columns.items():
            if name not in have:
                kind = pg_type if conn.dialect.name == "postgresql" else sqlite_type
                conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
    return apply


def _index(name: str, table: str, columns: str) -> Callable[[Connection], None]:
    def apply(conn: Connection) -> None:
        conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})")
    return apply


def _steps(*steps: Callable[[Connection], None]) -> Callable[[Connection], None]:
    def apply(conn: Connection) -> None:
        for step in steps:
            step(conn)
    return apply


MIGRATIONS: tuple[Migration, ...] = (
    Migration("0001_jobs_units_calls_records", _create_model_tables("gen_meta", "jobs", "units", "calls", "records")),
    Migration("0002_near_duplicate_index",
              _create_model_tables("neardup_signatures", "neardup_bands", "near_duplicates")),
    Migration("0003_unit_lease_token_and_dispatch_time", _add_columns("units", {
        "lease_token": ("INTEGER NOT NULL DEFAULT 0", "INTEGER NOT NULL DEFAULT 0"),
        "dispatched_at": ("DATETIME", "TIMESTAMP WITHOUT TIME ZONE"),
    })),
    Migration("0004_job_driver_and_streamed_planning", _steps(_add_columns("jobs", {
        "driver": ("VARCHAR(128)", "VARCHAR(128)"),
        "driver_until": ("DATETIME", "TIMESTAMP WITHOUT TIME ZONE"),
        "planned_units": ("INTEGER NOT NULL DEFAULT 0", "INTEGER NOT NULL DEFAULT 0"),
        "planning_done": ("BOOLEAN NOT NULL DEFAULT 1", "BOOLEAN NOT NULL DEFAULT TRUE"),
    }), _index("ix_units_job_seq", "units", "job_id, seq"))),
    Migration("0005_record_reviews", _create_model_tables("record_reviews")),
    Migration("0006_batches", _create_model_tables("batch_submissions", "batch_requests")),
    Migration("0007_batch_submitter", _steps(
        _create_model_tables("batch_submitters"),
        _add_columns("batch_requests", {"line": ("TEXT", "TEXT")}),
        _add_columns("batch_submissions", {"marker": ("VARCHAR(64)", "VARCHAR(64)"),
                                           "holder": ("VARCHAR(128)", "VARCHAR(128)")}),
        _index("ix_batch_submissions_marker", "batch_submissions", "marker"))),
    Migration("0008_record_screen", _add_columns("records", {"screen": ("TEXT", "TEXT")})),
)


def migrate(conn: Connection, *, describe: str) -> list[str]:
    """Bring the database on `conn` to this gen's schema; returns the names of the migrations applied now."""
    from sqlmodel import SQLModel

    from gen.store.models import Meta, utcnow

    register_tables()
    names = set(inspect(conn).get_table_names())
    known = [m.name for m in MIGRATIONS]
    if "gen_meta" not in names:
        if names & {"jobs", "units", "calls", "records"}:
            raise StoreError(f"{describe} holds tables that gen did not make (no gen_meta table)")
        SQLModel.metadata.create_all(conn)
        MIGRATION_TABLE.create(conn, checkfirst=True)
        now = utcnow().replace(tzinfo=None)
        conn.execute(MIGRATION_TABLE.insert(), [{"name": n, "applied_at": now} for n in known])
        conn.execute(Meta.__table__.insert().values(key="schema_version", value=str(len(known))))
        return known
    row = conn.execute(select(Meta.__table__.c.value).where(Meta.__table__.c.key == "schema_version")).first()
    if row is None:
        raise BeingCreated()
    if "gen_migrations" not in names:
        # A database from before named migrations (schema version 1): its first migration is what it holds.
        MIGRATION_TABLE.create(conn)
        conn.execute(MIGRATION_TABLE.insert().values(name=known[0], applied_at=utcnow().replace(tzinfo=None)))
    applied = {r[0] for r in conn.execute(select(MIGRATION_TABLE.c.name))}
    unknown = sorted(applied - set(known))
    if unknown:
        raise StoreError(f"{describe} was upgraded by a newer gen (migration {unknown[-1]}): upgrade gen")
    done_now = []
    for migration in MIGRATIONS:
        if migration.name in applied:
            continue
        migration.apply(conn)
        conn.execute(MIGRATION_TABLE.insert().values(name=migration.name, applied_at=utcnow().replace(tzinfo=None)))
        done_now.append(migration.name)
    if done_now:
        conn.execute(Meta.__table__.update().where(Meta.__table__.c.key == "schema_version")
                     .values(value=str(len(known))))
    return done_now


class BeingCreated(Exception):
    """gen_meta exists but its version row does not yet: another process is between the two (SQLite)."""
