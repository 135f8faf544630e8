"""`BatchingProvider`: a provider whose `complete(request)` joins a batch and waits for its answer.

One per teacher per process (per job run). A request is named by its identity (job, unit, teacher, request
body); before anything is sent the database is asked whether a request with that identity is already queued or
submitted and unused (a crashed run, a killed worker): if so this call waits for that request's answer instead
of sending it again. Otherwise the request is recorded `queued` with the JSONL line to send, and waits. Who sends
it, when, and who polls its batch is `gen.batching.fleet`'s: one submitter per (job, teacher) across the fleet,
gathering every process's queued requests from the database; any process polls; results reach the waiting unit
through the database. A request that failed inside a batch (error file, expired) raises a retryable
`ServerError`, so `TeacherClient` sends it again in a later batch exactly like an online retry, with its
attempts counted; one in a cancelled batch raises `Draining` (the unit goes back to pending).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from typing import Any

from gen.batching.apis import BatchAPI, make_batch_api
from gen.batching.fleet import CANCELLED, JobTeacherBatches, holder_name
from gen.batching.scope import CURRENT_UNIT, UnitScope
from gen.config import TeacherSpec
from gen.errors import BadRequest, Draining, ServerError
from gen.providers.base import Provider
from gen.providers.openai_provider import parse_chat_completion
from gen.store import batches as db
from gen.store.threads import in_db_thread
from gen.types import ChatRequest, Completion


def request_identity(job_id: str, unit_id: int, teacher: str, body: dict[str, Any]) -> str:
    payload = json.dumps([job_id, unit_id, teacher, body], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:40]


class BatchingProvider(Provider):
    def __init__(self, spec: TeacherSpec, api: BatchAPI | None = None):
        self.spec = spec
        self.api = api or make_batch_api(spec)
        self.name = f"{self.api.name}-batch"
        self.max_requests = min(spec.batch_max_requests, self.api.max_requests)
        self.holder = holder_name()                                # this process, as submitter of the teacher
        self._jobs: dict[str, JobTeacherBatches] = {}             # job_id -> this process's part in its batches
        self._claimed: set[str] = set()                           # custom_ids a call of this process waits on

    async def complete(self, request: ChatRequest) -> Completion:
        scope = CURRENT_UNIT.get()
        if scope is None:
            raise BadRequest(f"teacher '{self.spec.name}': batch mode runs only inside a job's unit")
        body: dict[str, Any] = {"model": request.model, "messages": request.messages, **request.params}
        if request.response_format is not None:
            body["response_format"] = request.response_format
        identity = request_identity(scope.job_id, scope.unit_id, self.spec.name, body)
        for custom_id, state, _batch_id, result in await in_db_thread(db.open_requests, scope.store,
                                                                      identity=identity):
            if custom_id in self._claimed:
                continue  # another call of this unit with the same request waits on it
            return await self._await(scope, custom_id, state, result)
        custom_id = f"{identity[:32]}-{uuid.uuid4().hex[:12]}"
        await in_db_thread(db.queue_request, scope.store, custom_id=custom_id, identity=identity,
                           job_id=scope.job_id, unit_id=scope.unit_id, teacher=self.spec.name,
                           line=self.api.line(custom_id, body).decode("utf-8"))
        return await self._await(scope, custom_id, "queued", None)

    def _job(self, scope: UnitScope) -> JobTeacherBatches:
        part = self._jobs.get(scope.job_id)
        if part is None:
            part = self._jobs[scope.job_id] = JobTeacherBatches(self.spec, self.api, scope.store, scope.job_id,
                                                                self.holder, self.max_requests)
        return part

    async def _await(self, scope: UnitScope, custom_id: str, state: str, result: str | None) -> Completion:
        self._claimed.add(custom_id)
        part = self._job(scope)
        try:
            if state in db.SETTLED_STATES:
                ok, text = state == "answered", result or ""
            else:
                ok, text = await asyncio.shield(part.wait_for(custom_id))
            await in_db_thread(db.consume, scope.store, custom_id=custom_id)
        finally:
            self._claimed.discard(custom_id)
            part.forget(custom_id)
        if not ok and text.startswith(CANCELLED):
            raise Draining(f"teacher '{self.spec.name}': {text}")  # gen cancel: the unit goes back to pending
        if not ok:
            raise ServerError(f"teacher '{self.spec.name}': request {text}")
        return parse_chat_completion(text.encode("utf-8"), status=200, headers={}, teacher=self.spec.name)

    async def aclose(self) -> None:
        for part in self._jobs.values():
            await part.aclose()
        await self.api.aclose()
