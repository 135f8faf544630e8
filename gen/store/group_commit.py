"""Group commit: one write-behind stage per store and event loop that gathers the hot path's writes (claims, call
journal rows, settles) from every unit in flight and applies them in one transaction (gen.store.writes).

A write waits for its transaction: its caller resumes only after the commit that holds it, so a unit is settled,
and a queue message acknowledged, only once its records are in the database. No timer delays a write: while one
transaction runs, the writes that arrive meanwhile gather, and go together in the next (as many as `max_ops`).

A batch whose transaction fails for any reason but an outage (a bad row, a deadlock) is retried one operation at a
time, each in its own transaction, so one bad write fails alone and no other is lost or written twice (the failed
transaction wrote nothing). During an outage the batch is held and retried, as any write is (through_outage).
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from gen.faults import failpoint
from gen.store import writes
from gen.store.threads import is_outage, through_outage

if TYPE_CHECKING:
    from gen.store.store import Store

log = logging.getLogger("gen.store")
MAX_OPS = 400


class GroupCommit:
    def __init__(self, store: "Store", *, max_ops: int = MAX_OPS, flushers: int | None = None):
        self.store = store
        self.max_ops = max_ops
        # SQLite has one writer; PostgreSQL commits two batches at once, so one waiting on its WAL flush does not
        # hold the next back.
        self.flushers = flushers or (1 if store.dialect == "sqlite" else 2)
        self._pending: list[tuple[writes.Op, asyncio.Future]] = []
        self._running = 0
        self.transactions = 0  # committed batches, and the ops in them (for benchmarks and tests)
        self.ops = 0

    async def write(self, op: writes.Op) -> Any:
        """Apply `op` in the next transaction; its result once committed (LeaseLost raised as the single write
        would)."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        if self._running < self.flushers:
            self._running += 1
            asyncio.get_running_loop().create_task(self._drain())
        result = await future
        if isinstance(result, BaseException):
            raise result
        return result

    async def claim(self, unit_id: int, *, job_id: str, worker: str | None, lease_seconds: float) -> Any:
        return await self.write(writes.Claim(unit_id, job_id, worker, lease_seconds))

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:self.max_ops], self._pending[self.max_ops:]
                await self._commit(batch)
        finally:
            self._running -= 1

    async def _commit(self, batch: list[tuple[writes.Op, asyncio.Future]]) -> None:
        ops = [op for op, _ in batch]
        try:
            results = await through_outage(self.store.apply_writes, ops)
        except Exception as exc:
            if is_outage(exc) or len(batch) == 1:
                for _, future in batch:
                    _settle(future, exception=exc)
                return
            log.warning("a transaction of %d writes failed (%s: %s); applying them one at a time", len(batch),
                        type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
            for op, future in batch:
                try:
                    (result,) = await through_outage(self.store.apply_writes, [op])
                except Exception as one:
                    _settle(future, exception=one)
                else:
                    self.transactions += 1
                    self.ops += 1
                    _settle(future, result)
            return
        self.transactions += 1
        self.ops += len(ops)
        failpoint("after-commit")
        for (_, future), result in zip(batch, results):
            _settle(future, result)


def _settle(future: asyncio.Future, result: Any = None, *, exception: BaseException | None = None) -> None:
    if future.done():  # its waiter was cancelled (Ctrl-C twice): the write is in the database all the same
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
