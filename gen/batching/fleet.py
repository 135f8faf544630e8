"""One process's part in batching a (job, teacher)'s requests, the same with one process (`gen run`) or a fleet.

The database is the source of truth: every request is recorded `queued` with its JSONL line before anything is
sent, so whoever submits can gather the queued requests of every process. While this process has a unit waiting
on the teacher, `JobTeacherBatches.run` takes a turn every `TICK` seconds:

- **submit**, only while holding the (job, teacher) submitter lease (`batch_submitters`, renewed each turn, taken
  over by another process when it expires): recover the intents a previous submitter left behind, then, once
  `batch_max_requests` are queued or the oldest has waited `batch_window` seconds, send every queued request of
  the fleet in files under the provider's limits. Each file is first written as an intent (`submitting`, with
  a marker the batch carries in its metadata) in the same transaction that checks the lease, then created at
  the provider, then recorded: a process killed in between leaves an intent, which the next submitter resolves
  by listing the provider's batches for the marker (found: recorded; not found: the requests are queued again).
- **poll**, by any process: batches due for a poll are claimed on their row (one poller at a time; a dead
  poller's claim runs out after `POLL_HOLD`), retrieved, and once finished their files are downloaded and every
  request's result recorded.
- **collect**: the results of this process's waiting requests are read from the database and handed back.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from gen.batching.apis import BatchAPI, parse_result_lines
from gen.config import TeacherSpec
from gen.store import batches as db
from gen.store.models import utcnow
from gen.store.threads import in_db_thread

log = logging.getLogger("gen.batching")
TICK = 0.2              # seconds between turns
SUBMITTER_LEASE = 6.0   # seconds the submitter lease lasts unless renewed (a killed submitter is replaced after it)
TAKE_EVERY = 1.0        # how often a process not holding the lease tries to take it
POLL_HOLD = 30.0        # seconds a claimed poll keeps other pollers off the batch
FIRST_POLL = 0.25       # seconds after submitting; then about a third of the batch's age, up to MAX_POLL
MAX_POLL = 60.0
CANCELLED = "cancelled:"


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def next_poll_in(created_at: datetime) -> float:
    """Backoff by age: polls at 0.25 s, then every third of the batch's age (as x1.5 steps would), up to 60 s."""
    created = created_at if created_at.tzinfo else created_at.replace(tzinfo=timezone.utc)
    age = (utcnow() - created).total_seconds()
    return max(FIRST_POLL, min(MAX_POLL, age / 3))


class JobTeacherBatches:
    def __init__(self, spec: TeacherSpec, api: BatchAPI, store: Any, job_id: str, holder: str, max_requests: int):
        self.spec, self.api, self.store, self.job_id = spec, api, store, job_id
        self.holder, self.max_requests = holder, max_requests
        self.waiting: dict[str, asyncio.Future] = {}     # custom_id -> (ok, text), for this process's units
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.holding = False
        self._recover = False                              # intents may wait for recovery (a new lease, an orphan)
        self._lease_at = 0.0                              # loop time of the last take or renewal attempt
        self._polls: dict[str, asyncio.Task] = {}

    def wait_for(self, custom_id: str) -> asyncio.Future:
        future = self.waiting.get(custom_id)
        if future is None:
            future = self.waiting[custom_id] = asyncio.get_running_loop().create_future()
        self.wake.set()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.run())
        return future

    def forget(self, custom_id: str) -> None:
        self.waiting.pop(custom_id, None)

    async def run(self) -> None:
        while self.waiting:
            try:
                await self.turns()
            finally:
                await self.release()

    async def turns(self) -> None:
        while self.waiting:
            self.wake.clear()
            try:
                await self.turn()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database or the provider away: the next turn tries again
                log.warning("teacher %s: batch turn failed (%s: %s)", self.spec.name, type(exc).__name__, exc)
            try:
                await asyncio.wait_for(self.wake.wait(), TICK)
            except asyncio.TimeoutError:
                pass

    async def release(self) -> None:
        if not self.holding:
            return
        self.holding = False
        try:
            await in_db_thread(db.release_submitter, self.store, job_id=self.job_id, teacher=self.spec.name,
                               holder=self.holder)
        except Exception:  # it runs out anyway
            pass

    async def turn(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._lease_at >= (TAKE_EVERY if not self.holding else SUBMITTER_LEASE / 6):
            self._lease_at = loop.time()
            held = await in_db_thread(db.take_submitter, self.store, job_id=self.job_id, teacher=self.spec.name,
                                      holder=self.holder, seconds=SUBMITTER_LEASE)
            self._recover = self._recover or (held and not self.holding)
            self.holding = held
        if self.holding:
            if self._recover:
                await self.recover()
                self._recover = False
            await self.submit_due()
        for batch_id, created_at in await in_db_thread(db.claim_polls, self.store, job_id=self.job_id,
                                                       teacher=self.spec.name, hold_seconds=POLL_HOLD):
            if batch_id not in self._polls:
                self._polls[batch_id] = loop.create_task(self.poll(batch_id, created_at))
        await self.collect()

    # -- submitting (the lease holder only) ---------------------------------------------------------------------
    async def submit_due(self) -> None:
        count, oldest = await in_db_thread(db.queued_summary, self.store, job_id=self.job_id, teacher=self.spec.name)
        if not count:
            return
        oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=timezone.utc)
        if count < self.max_requests and utcnow() - oldest < timedelta(seconds=self.spec.batch_window):
            return
        while self.holding:
            marker = uuid.uuid4().hex
            chunk = await in_db_thread(db.open_intent, self.store, job_id=self.job_id, teacher=self.spec.name,
                                       provider=self.api.name, holder=self.holder, marker=marker,
                                       max_requests=self.max_requests, max_bytes=self.api.max_bytes,
                                       lease_seconds=SUBMITTER_LEASE)
            if chunk is None:
                self.holding = False  # the lease ran out (a stall): whoever took it submits from now on
                return
            if not chunk:
                return
            self._lease_at = asyncio.get_running_loop().time()
            await self.create(marker, [line.encode("utf-8") for _, line in chunk])

    async def create(self, marker: str, lines: list[bytes]) -> None:
        started = utcnow()
        try:
            batch_id = await self.api.submit(lines, marker)
        except Exception as exc:  # was the batch created before the failure? ask the provider before deciding
            log.warning("teacher %s: batch not submitted: %s", self.spec.name, exc)
            try:
                batch_id = await self.api.find(marker, started)
            except Exception:
                await in_db_thread(db.orphan_intent, self.store, marker=marker)  # recovery decides later
                self._recover = True
                return
            if batch_id is None:
                await in_db_thread(db.drop_intent, self.store, marker=marker, failed=f"not submitted: {exc}")
                return
        recorded = await in_db_thread(db.record_created, self.store, marker=marker, batch_id=batch_id,
                                      next_poll_in=FIRST_POLL)
        if recorded == db.GONE:
            # This process stalled past its lease and another submitter already resolved the intent (its
            # requests may be queued again): the late batch would answer them twice, so it is cancelled.
            log.warning("teacher %s: batch %s was created after its submission had been taken over; cancelling it",
                        self.spec.name, batch_id)
            await self.api.cancel(batch_id)
        elif recorded == db.JOB_CANCELLED:
            await self.cancel_late(batch_id)

    async def cancel_late(self, batch_id: str) -> None:
        """A batch recorded after `gen cancel` listed the job's batches: cancelled here, as gen cancel would."""
        log.warning("teacher %s: batch %s was created while its job was being cancelled; cancelling it",
                    self.spec.name, batch_id)
        try:
            await self.api.cancel(batch_id)
            await in_db_thread(db.mark_cancelled, self.store, batch_id=batch_id)
        except Exception as exc:  # it stays in flight: `gen cancel` again, or `gen resume`, takes it from here
            log.warning("teacher %s: cancelling batch %s failed: %s", self.spec.name, batch_id, exc)

    async def recover(self) -> None:
        """Intents another submitter left (killed between creating a batch and recording it): found at the
        provider by their marker, or queued again when the provider never created them."""
        for marker, created_at in await in_db_thread(db.foreign_intents, self.store, job_id=self.job_id,
                                                     teacher=self.spec.name, holder=self.holder):
            batch_id = await self.api.find(marker, created_at)
            if batch_id is None:
                log.warning("teacher %s: an interrupted submission never reached the provider; its requests are "
                            "queued again", self.spec.name)
                await in_db_thread(db.drop_intent, self.store, marker=marker)
            else:
                log.warning("teacher %s: an interrupted submission was found at the provider as batch %s",
                            self.spec.name, batch_id)
                if await in_db_thread(db.record_created, self.store, marker=marker, batch_id=batch_id,
                                      next_poll_in=0.0) == db.JOB_CANCELLED:
                    await self.cancel_late(batch_id)

    # -- polling (one process per batch at a time) --------------------------------------------------------------
    async def poll(self, batch_id: str, created_at: datetime) -> None:
        try:
            state = await self.api.retrieve(batch_id)
            if not state.finished:
                await in_db_thread(db.note_poll, self.store, batch_id=batch_id, next_poll_in=next_poll_in(created_at))
                return
            results: dict[str, tuple[bool, str]] = {}
            for file_id in (state.error_file, state.output_file):
                if file_id:
                    results.update(parse_result_lines(await self.api.download(file_id)))
            status = state.status.lower()
            missing = f"{CANCELLED} batch {batch_id} was cancelled" if status == "cancelled" else None
            await in_db_thread(db.record_results, self.store, batch_id=batch_id, status=status, results=results,
                               missing=missing)
            self.wake.set()
        except Exception as exc:  # tried again at the next poll time (or once the claim runs out)
            log.warning("teacher %s: polling batch %s failed: %s", self.spec.name, batch_id, exc)
            try:
                await in_db_thread(db.note_poll, self.store, batch_id=batch_id,
                                   next_poll_in=next_poll_in(created_at))
            except Exception:
                pass
        finally:
            self._polls.pop(batch_id, None)

    # -- collecting ---------------------------------------------------------------------------------------------
    async def collect(self) -> None:
        if not self.waiting:
            return
        settled = await in_db_thread(db.settled_requests, self.store, custom_ids=list(self.waiting))
        for custom_id, (state, result) in settled.items():
            future = self.waiting.get(custom_id)
            if future is not None and not future.done():
                future.set_result((state == "answered", result or f"had no result ({state})"))

    async def aclose(self) -> None:
        tasks = [t for t in (self.task, *self._polls.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
