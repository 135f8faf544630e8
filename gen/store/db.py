"""Engines and the schema version: SQLite (WAL) by default, PostgreSQL by URL."""
from __future__ import annotations

import time

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError
from sqlmodel import create_engine

from gen.config import check_url_port
from gen.errors import StoreError
from gen.secrets import redact_url, register_url_password
from gen.store.migrations import BeingCreated, migrate


def normalise_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    register_url_password(url)
    try:
        check_url_port(url, what="the database URL (--db / GEN_DATABASE_URL)")
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StoreError(f"GEN_DATABASE_URL is not a database URL: {redact(url)}") from None
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")  # first: the pragmas below may wait for another process
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if parsed.get_backend_name() == "postgresql":
        # No pre-ping (a round trip per checkout); connections are recycled instead.
        return create_engine(url, pool_size=20, max_overflow=20, pool_recycle=1800)
    raise StoreError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite:/// or postgresql+psycopg://")


def redact(url: str) -> str:
    """The URL as it may be shown: its password as `***`, however it is written (gen.secrets.redact_url)."""
    return redact_url(url)


SCHEMA_LOCK = 7412001  # a PostgreSQL advisory lock id: one process at a time prepares the schema


def prepare_schema(engine: Engine) -> None:
    """Create the tables on a new database; apply the named migrations an older one lacks (gen.store.migrations);
    refuse a newer one with a clear message.

    Safe when several workers start at once on a new database: on PostgreSQL the whole step runs in one
    transaction under an advisory lock (DDL is transactional there); on SQLite a lost race is retried."""
    attempts = 300  # up to about a minute: a new database with every table is being created by another process
    for attempt in range(attempts):
        last = attempt == attempts - 1
        try:
            with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
                migrate(conn, describe=redact(str(engine.url)))
            return
        except BeingCreated:
            if last:
                raise StoreError(f"{redact(str(engine.url))} has a gen_meta table without a schema version") from None
        except OperationalError as exc:
            if last or "already exists" not in str(exc.orig):
                reason = " ".join(line.strip() for line in str(exc.orig).strip().splitlines()[:1])
                raise StoreError(f"cannot open the database {redact(str(engine.url))}: {reason}") from None
        except IntegrityError:
            if last:
                raise
        time.sleep(0.05 * (1 + attempt % 5))  # another process is creating the schema this moment
