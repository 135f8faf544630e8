"""The database-backed journal a unit's teachers write to: every call recorded (fenced by the unit's lease),
accepted answers replayable, no call started while the run drains or after the lease is gone."""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gen.batching.scope import CURRENT_UNIT, UnitScope
from gen.core.lease import Lease
from gen.errors import Draining
from gen.store import Store
from gen.store.group_commit import GroupCommit
from gen.store.threads import through_outage
from gen.store.writes import AddCall
from gen.teacher import CallOutcome, StoredReply


@dataclass
class CallGate:
    """Shared by every unit of a run: whether new calls may start, and how many are in flight."""

    draining: bool = False
    in_flight: int = 0

    def check(self) -> None:
        if self.draining:
            raise Draining("the run is stopping: no new teacher calls")


class DbJournal:
    def __init__(self, store: Store, writes: GroupCommit, job_id: str, lease: Lease, gate: CallGate,
                 accepted: dict[tuple[str, int], StoredReply]):
        self.store = store
        self.writes = writes
        self.job_id = job_id
        self.lease = lease
        self.gate = gate
        self._accepted = accepted

    @property
    def unit_id(self) -> int:
        return self.lease.unit_id

    @classmethod
    async def open(cls, store: Store, writes: GroupCommit, job_id: str, lease: Lease, gate: CallGate, *,
                   first_attempt: bool) -> "DbJournal":
        """A unit's journal with what earlier runs of it already paid for, keyed by (request, occurrence).
        A unit on its first attempt has no earlier calls: no query."""
        accepted: dict[tuple[str, int], StoredReply] = {}
        if not first_attempt:
            rows = await through_outage(store.accepted_calls, lease.unit_id)
            accepted = {(key, occ): StoredReply(call_id, text or "") for call_id, key, occ, text in rows}
        return cls(store, writes, job_id, lease, gate, accepted)

    @property
    def replayable(self) -> int:
        return len(self._accepted)

    @contextlib.asynccontextmanager
    async def sending(self) -> AsyncIterator[None]:
        """Around one HTTP exchange: refused (Draining, LeaseLost) before anything is sent; counted in flight."""
        self.gate.check()
        self.lease.check()
        self.gate.in_flight += 1
        scope = CURRENT_UNIT.set(UnitScope(self.store, self.job_id, self.lease.unit_id))  # for mode: batch
        try:
            yield
        finally:
            CURRENT_UNIT.reset(scope)
            self.gate.in_flight -= 1

    async def record_call(self, outcome: CallOutcome) -> int:
        """Written before the answer is used, in the same transaction as other units' writes; this returns once
        that transaction committed. While the database is away the answer waits here (it was paid for) and is
        written when the database returns (gen.store.group_commit)."""
        return await self.writes.write(AddCall(fence=(self.lease.unit_id, self.lease.token), values=dict(
            job_id=self.job_id, unit_id=self.lease.unit_id, teacher=outcome.teacher, model=outcome.model,
            params=outcome.params, messages=outcome.messages, request_key=outcome.request_key,
            occurrence=outcome.occurrence, attempt=outcome.attempt, status=outcome.status, text=outcome.text,
            finish_reason=outcome.finish_reason, latency_ms=outcome.latency_ms,
            prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens,
            cost_usd=outcome.cost_usd, error=outcome.error, error_kind=outcome.error_kind,
            accepted=outcome.accepted, reject_reason=outcome.reject_reason,
        )))

    def accepted_reply(self, request_key: str, occurrence: int) -> StoredReply | None:
        return self._accepted.get((request_key, occurrence))
