"""`BatchingProvider`: a provider whose `complete(request)` joins a batch and waits for its answer.

One per teacher per process. A request is named by its identity (job, unit, teacher, request body); before
anything is sent the database is asked whether a request with that identity is already submitted and unused
(a crashed run, a killed worker): if so this call waits for that batch instead of sending it again. Otherwise
the request is recorded (state `queued`), gathered with every other waiting request of the teacher, and the
collector flushes when `batch_max_requests` are waiting or `batch_window` seconds after the first one, split at
the provider's request and byte limits. Each batch is recorded with its custom_ids, then polled with backoff;
its output and error files resolve every waiting request by custom_id. A request that failed inside a batch
(error file, expired, cancelled) raises a retryable `ServerError`, so `TeacherClient` sends it again in a later
batch exactly like an online retry, with its attempts counted.

Known gap: a process killed between the provider creating a batch and the database recording it (one round
trip) leaves that batch unknown to gen; its requests are sent again by the next run.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from typing import Any

from gen.batching.apis import BatchAPI, make_batch_api, parse_result_lines
from gen.batching.scope import CURRENT_UNIT, UnitScope
from gen.config import TeacherSpec
from gen.errors import BadRequest, Draining, ServerError
from gen.providers.base import Provider
from gen.providers.openai_provider import parse_chat_completion
from gen.store import batches as db
from gen.store.threads import in_db_thread
from gen.types import ChatRequest, Completion

log = logging.getLogger("gen.batching")
FIRST_POLL = 0.25     # seconds after submitting; then x1.5 each poll up to MAX_POLL
MAX_POLL = 60.0
CANCELLED = "cancelled:"


def request_identity(job_id: str, unit_id: int, teacher: str, body: dict[str, Any]) -> str:
    payload = json.dumps([job_id, unit_id, teacher, body], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:40]


class BatchingProvider(Provider):
    def __init__(self, spec: TeacherSpec, api: BatchAPI | None = None):
        self.spec = spec
        self.api = api or make_batch_api(spec)
        self.name = f"{self.api.name}-batch"
        self.max_requests = min(spec.batch_max_requests, self.api.max_requests)
        self._waiting: dict[str, asyncio.Future] = {}            # custom_id -> (ok, text)
        self._queued: list[tuple[str, bytes, UnitScope]] = []     # gathered, not yet sent
        self._timer: asyncio.Task | None = None
        self._polls: dict[str, asyncio.Task] = {}                 # batch_id -> its poller
        self._members: dict[str, set[str]] = {}                   # batch_id -> custom_ids waited on here
        self._claimed: set[str] = set()                           # custom_ids a call of this process waits on
        self._tasks: set[asyncio.Task] = set()

    async def complete(self, request: ChatRequest) -> Completion:
        scope = CURRENT_UNIT.get()
        if scope is None:
            raise BadRequest(f"teacher '{self.spec.name}': batch mode runs only inside a job's unit")
        body: dict[str, Any] = {"model": request.model, "messages": request.messages, **request.params}
        if request.response_format is not None:
            body["response_format"] = request.response_format
        identity = request_identity(scope.job_id, scope.unit_id, self.spec.name, body)
        for custom_id, state, batch_id, result in await in_db_thread(db.open_requests, scope.store,
                                                                     identity=identity):
            if custom_id in self._claimed:
                continue  # another call of this unit with the same request waits on it
            return await self._await(scope, custom_id, state, batch_id, result)
        custom_id = f"{identity[:32]}-{uuid.uuid4().hex[:12]}"
        await in_db_thread(db.queue_request, scope.store, custom_id=custom_id, identity=identity,
                           job_id=scope.job_id, unit_id=scope.unit_id, teacher=self.spec.name)
        self._queued.append((custom_id, self.api.line(custom_id, body), scope))
        return await self._await(scope, custom_id, "queued", None, None)

    # -- waiting ---------------------------------------------------------------------------------------------
    async def _await(self, scope: UnitScope, custom_id: str, state: str, batch_id: str | None,
                     result: str | None) -> Completion:
        self._claimed.add(custom_id)
        try:
            if state in ("answered", "failed"):
                ok, text = state == "answered", result or ""
            else:
                future = self._waiting.setdefault(custom_id, asyncio.get_running_loop().create_future())
                if state == "queued":
                    self._schedule_flush()
                elif batch_id is not None:
                    self._ensure_poll(scope, batch_id, [custom_id])
                ok, text = await asyncio.shield(future)
            await in_db_thread(db.consume, scope.store, custom_id=custom_id)
        finally:
            self._claimed.discard(custom_id)
            self._waiting.pop(custom_id, None)
        if not ok and text.startswith(CANCELLED):
            raise Draining(f"teacher '{self.spec.name}': {text}")  # gen cancel: the unit goes back to pending
        if not ok:
            raise ServerError(f"teacher '{self.spec.name}': request {text}")
        return parse_chat_completion(text.encode("utf-8"), status=200, headers={}, teacher=self.spec.name)

    # -- sending ---------------------------------------------------------------------------------------------
    def _schedule_flush(self) -> None:
        if len(self._queued) >= self.max_requests:
            self._spawn(self._flush())
        elif self._timer is None or self._timer.done():
            self._timer = self._spawn(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.spec.batch_window)
        await self._flush()

    async def _flush(self) -> None:
        while self._queued:
            chunk, size = [], 0
            while self._queued and len(chunk) < self.max_requests:
                line_bytes = len(self._queued[0][1])
                if chunk and size + line_bytes > self.api.max_bytes:
                    break
                chunk.append(self._queued.pop(0))
                size += line_bytes
            await self._submit(chunk)

    async def _submit(self, chunk: list[tuple[str, bytes, UnitScope]]) -> None:
        custom_ids = [c for c, _, _ in chunk]
        scope = chunk[0][2]
        try:
            batch_id = await self.api.submit([line for _, line, _ in chunk])
        except Exception as exc:  # nothing was created: the requests fail and are retried like online calls
            log.warning("teacher %s: batch not submitted: %s", self.spec.name, exc)
            for custom_id in custom_ids:
                self._resolve(custom_id, False, f"not submitted: {exc}")
            return
        await in_db_thread(db.record_submission, scope.store, batch_id=batch_id, job_id=scope.job_id,
                           teacher=self.spec.name, provider=self.api.name, custom_ids=custom_ids,
                           next_poll_in=FIRST_POLL)
        self._ensure_poll(scope, batch_id, custom_ids)

    # -- collecting ------------------------------------------------------------------------------------------
    def _ensure_poll(self, scope: UnitScope, batch_id: str, custom_ids: list[str]) -> None:
        self._members.setdefault(batch_id, set()).update(custom_ids)
        task = self._polls.get(batch_id)
        if task is None or task.done():
            self._polls[batch_id] = self._spawn(self._poll(scope, batch_id))

    async def _poll(self, scope: UnitScope, batch_id: str) -> None:
        delay = FIRST_POLL
        while True:
            await asyncio.sleep(delay)
            try:
                state = await self.api.retrieve(batch_id)
            except Exception as exc:  # a failed poll is tried again later; the batch is still there
                log.warning("teacher %s: polling batch %s failed: %s", self.spec.name, batch_id, exc)
                state = None
            if state is not None and state.finished:
                break
            delay = min(MAX_POLL, delay * 1.5)
            await in_db_thread(db.note_poll, scope.store, batch_id=batch_id, next_poll_in=delay)
        results: dict[str, tuple[bool, str]] = {}
        for file_id in (state.error_file, state.output_file):
            if file_id:
                results.update(parse_result_lines(await self._download(file_id)))
        status = state.status.lower()
        if status == "cancelled":
            for custom_id in self._members.get(batch_id, set()) - set(results):
                results[custom_id] = (False, f"{CANCELLED} batch {batch_id} was cancelled")
        await in_db_thread(db.record_results, scope.store, batch_id=batch_id, status=status, results=results)
        for custom_id in self._members.pop(batch_id, set()):
            if custom_id in results:
                self._resolve(custom_id, *results[custom_id])
            else:
                row = await in_db_thread(db.request_result, scope.store, custom_id=custom_id)
                ok = row is not None and row[0] == "answered"
                self._resolve(custom_id, ok, (row[1] if row and row[1] else f"had no result in batch {batch_id}"))

    async def _download(self, file_id: str) -> bytes:
        delay = FIRST_POLL
        while True:
            try:
                return await self.api.download(file_id)
            except Exception as exc:
                log.warning("teacher %s: downloading %s failed: %s", self.spec.name, file_id, exc)
                await asyncio.sleep(delay)
                delay = min(MAX_POLL, delay * 2)

    def _resolve(self, custom_id: str, ok: bool, text: str) -> None:
        future = self._waiting.get(custom_id)
        if future is not None and not future.done():
            future.set_result((ok, text))

    def _spawn(self, coro) -> asyncio.Task:  # noqa: ANN001
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.api.aclose()
