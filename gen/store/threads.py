"""Database calls from async code run on a thread pool, so the event loop never waits on a round trip.

SQLite takes one writer at a time, so its pool has one thread (threads contending for its lock only spin);
PostgreSQL gets several, each with its own pooled connection.
"""
from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def make_db_executor(dialect: str) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1 if dialect == "sqlite" else 16, thread_name_prefix="gen-db")


async def in_db_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a `Store` method (a bound method: its store's executor is used) off the event loop."""
    store = getattr(fn, "__self__", None)
    executor = store.executor if store is not None else None
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, functools.partial(fn, *args, **kwargs))


DB_OUTAGE_SECONDS = 600.0  # how long a paid-for answer waits for the database to come back before giving up


def is_outage(exc: BaseException) -> bool:
    """A database that is away or restarting (not a bad statement): worth waiting for."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


async def through_outage(fn: Callable[..., T], *args: Any, seconds: float | None = None, **kwargs: Any) -> T:
    """`in_db_thread`, retried with backoff while the database is unreachable (up to `seconds`)."""
    import logging
    import time

    limit = DB_OUTAGE_SECONDS if seconds is None else seconds
    started, delay, warned = time.monotonic(), 0.25, False
    while True:
        try:
            result = await in_db_thread(fn, *args, **kwargs)
            if warned:
                logging.getLogger("gen.store").warning("database reachable again; the held write went through")
            return result
        except Exception as exc:
            if not is_outage(exc) or time.monotonic() - started > limit:
                raise
            if not warned:
                logging.getLogger("gen.store").warning("database unreachable (%s); holding the write and retrying "
                                                       "for up to %.0fs", type(exc).__name__, limit)
                warned = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
