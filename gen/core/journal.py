"""The database-backed journal a unit's teachers write to: every call recorded, accepted answers replayable."""
from __future__ import annotations

from gen.store import Store
from gen.teacher import CallOutcome, StoredReply


class DbJournal:
    def __init__(self, store: Store, job_id: str, unit_id: int):
        self.store = store
        self.job_id = job_id
        self.unit_id = unit_id
        # What an earlier run of this unit already paid for, keyed by (request, occurrence).
        self._accepted = {(key, occ): StoredReply(call_id, text or "")
                          for call_id, key, occ, text in store.accepted_calls(unit_id)}

    @property
    def replayable(self) -> int:
        return len(self._accepted)

    def record_call(self, outcome: CallOutcome) -> int:
        return self.store.add_call(
            job_id=self.job_id, unit_id=self.unit_id, teacher=outcome.teacher, model=outcome.model,
            params=outcome.params, messages=outcome.messages, request_key=outcome.request_key,
            occurrence=outcome.occurrence, attempt=outcome.attempt, status=outcome.status, text=outcome.text,
            finish_reason=outcome.finish_reason, latency_ms=outcome.latency_ms,
            prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens,
            cost_usd=outcome.cost_usd, error=outcome.error, error_kind=outcome.error_kind,
        )

    def accept_call(self, call_id: int) -> None:
        self.store.mark_call(call_id, accepted=True)

    def reject_call(self, call_id: int, reason: str) -> None:
        self.store.mark_call(call_id, accepted=False, reason=reason)

    def accepted_reply(self, request_key: str, occurrence: int) -> StoredReply | None:
        return self._accepted.get((request_key, occurrence))
