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
