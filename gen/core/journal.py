"""The database-backed journal a unit's teachers write to: every call recorded, accepted answers replayable."""
from __future__ import annotations

from gen.store import Store
from gen.store.threads import in_db_thread
from gen.teacher import CallOutcome, StoredReply


class DbJournal:
    def __init__(self, store: Store, job_id: str, unit_id: int, accepted: dict[tuple[str, int], StoredReply]):
        self.store = store
        self.job_id = job_id
        self.unit_id = unit_id
        self._accepted = accepted

    @classmethod
    async def open(cls, store: Store, job_id: str, unit_id: int, *, first_attempt: bool) -> "DbJournal":
        """A unit's journal with what earlier runs of it already paid for, keyed by (request, occurrence).
        A unit on its first attempt has no earlier calls: no query."""
        accepted: dict[tuple[str, int], StoredReply] = {}
        if not first_attempt:
            rows = await in_db_thread(store.accepted_calls, unit_id)
            accepted = {(key, occ): StoredReply(call_id, text or "") for call_id, key, occ, text in rows}
        return cls(store, job_id, unit_id, accepted)

    @property
    def replayable(self) -> int:
        return len(self._accepted)

    async def record_call(self, outcome: CallOutcome) -> int:
        return await in_db_thread(
            self.store.add_call,
            job_id=self.job_id, unit_id=self.unit_id, teacher=outcome.teacher, model=outcome.model,
            params=outcome.params, messages=outcome.messages, request_key=outcome.request_key,
            occurrence=outcome.occurrence, attempt=outcome.attempt, status=outcome.status, text=outcome.text,
            finish_reason=outcome.finish_reason, latency_ms=outcome.latency_ms,
            prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens,
            cost_usd=outcome.cost_usd, error=outcome.error, error_kind=outcome.error_kind,
            accepted=outcome.accepted, reject_reason=outcome.reject_reason,
        )

    def accepted_reply(self, request_key: str, occurrence: int) -> StoredReply | None:
        return self._accepted.get((request_key, occurrence))
