"""A teacher: one provider behind one rate limiter, with retries, structured outputs and a record of every call.

Two layers:
- `TeacherClient` is shared by every unit of a job. `exchange()` reserves the call's estimated cost from the
  job's budget (if any), sends one request through the limiter and retries transport failures (429 honouring
  Retry-After and lowering the pace, 5xx, timeouts, connection errors, malformed bodies, answers cut at
  max_tokens) with exponential backoff and jitter, all as the teacher's `RetryPolicy` says. Every HTTP exchange
  is handed to the unit's journal.
- `UnitTeacher` is what an instructor receives. `chat()` asks for text or for JSON valid against a schema,
  retries outputs that fail validation, and replays answers the journal already holds, so a unit that is run
  again (after Ctrl-C, a crash, a redelivery) never pays twice for a call that was already accepted.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from dataclasses import dataclass, field
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from gen.budget import Budget, Reservation
from gen.config import RetryPolicy, TeacherSpec
from gen.errors import (BadRequest, Draining, LeaseLost, MalformedResponse, OutputRejected, RateLimited,
                        ResponseFormatUnsupported, TeacherError, Truncated)
from gen.providers.base import Provider
from gen.ratelimit.base import HeaderHint, RateLimiter
from gen.schemas import first_problem, validator_for_schema_text
from gen.types import ChatRequest, Check, Completion, Message, Reply, estimate_prompt_tokens

@dataclass
class CallOutcome:
    """One HTTP exchange as the journal records it (never holds a key)."""

    teacher: str
    model: str
    params: dict[str, Any]
    messages: list[Message]
    request_key: str
    occurrence: int
    attempt: int
    latency_ms: int
    status: int | None = None
    text: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None
    error_kind: str | None = None
    accepted: bool | None = None        # True: the output passed validation; False: refused (reason below)
    reject_reason: str | None = None


@dataclass
class StoredReply:
    """An accepted answer the journal already holds."""

    call_id: int
    text: str


class Journal(Protocol):
    """Where a unit's calls go. The execution core provides a database-backed one.

    A failed exchange is recorded as soon as it fails; a successful one once its output has been validated,
    in the same write as the verdict (`outcome.accepted`), so each answer costs one write.
    """

    async def record_call(self, outcome: CallOutcome) -> int: ...

    def accepted_reply(self, request_key: str, occurrence: int) -> StoredReply | None: ...

    def sending(self) -> AbstractAsyncContextManager[None]:
        """Wraps each HTTP exchange: may refuse to start one (the run drains, the unit's lease is gone)."""
        ...


@dataclass
class Meter:
    """Live counters for the progress display (the database stays the source of truth)."""

    calls: int = 0
    failed_calls: int = 0
    rate_limited: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    replayed: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, outcome: CallOutcome) -> None:
        self.calls += 1
        if outcome.error:
            self.failed_calls += 1
        if outcome.error_kind == "RateLimited":
            self.rate_limited += 1
        self.prompt_tokens += outcome.prompt_tokens
        self.completion_tokens += outcome.completion_tokens
        self.cost_usd += outcome.cost_usd


def backoff_delay(attempt: int, retry_after: float | None, *, base: float, cap: float,
                  rng: random.Random = random.Random()) -> float:
    """Exponential backoff with jitter (base and cap from the RetryPolicy); never sooner than Retry-After."""
    delay = min(cap, base * (2 ** attempt)) * rng.uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, retry_after + rng.uniform(0, 0.1 + retry_after * 0.1))
    return delay


def request_key(teacher: str, model: str, messages: list[Message], schema_text: str | None,
                params: dict[str, Any]) -> str:
    payload = json.dumps([teacher, model, messages, schema_text, params], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def is_strict_compatible(schema: Any) -> bool:
    """OpenAI's strict mode needs every object closed and every property required."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" or "properties" in schema:
            props = schema.get("properties", {})
            if schema.get("additionalProperties") is not False or set(schema.get("required", [])) != set(props):
                return False
        return all(is_strict_compatible(v) for v in schema.values())
    if isinstance(schema, list):
        return all(is_strict_compatible(v) for v in schema)
    return True


def schema_prompt(schema_text: str) -> str:
    return ("Respond with only a JSON object, no prose and no code fences, that validates against this JSON "
            "Schema:\n```json\n" + schema_text + "\n```")


class TeacherClient:
    """Shared by all units of a job: the provider, its limiter, its retry policy, the job's budget and its
    structured-output mode."""

    def __init__(self, spec: TeacherSpec, provider: Provider, limiter: RateLimiter, meter: Meter | None = None, *,
                 policy: RetryPolicy | None = None, budget: Budget | None = None, sleep=asyncio.sleep):
        self.spec = spec
        self.name = spec.name
        self.provider = provider
        self.limiter = limiter
        self.meter = meter or Meter()
        self.policy = policy or RetryPolicy.of(spec)
        self.budget = budget
        self.json_mode = spec.structured_output == "json_object"  # switched on when a server refuses json_schema
        self._sleep = sleep
        self._rng = random.Random()

    def estimated_cost(self, messages: list[Message], params: dict[str, Any]) -> float:
        """An upper bound on one call's cost: the prompt's estimated tokens and the whole of max_tokens."""
        return self.spec.call_cost(estimate_prompt_tokens(messages),
                                     int(params.get("max_tokens") or self.spec.max_tokens))

    def _backoff(self, attempt: int, retry_after: float | None, *, base: float | None = None) -> float:
        return backoff_delay(attempt, retry_after, base=self.policy.backoff_base if base is None else base,
                             cap=self.policy.backoff_cap, rng=self._rng)

    async def exchange(self, messages: list[Message], *, journal: Journal, key: str, occurrence: int,
                       params: dict[str, Any], response_format: dict[str, Any] | None
                       ) -> tuple[Completion, CallOutcome]:
        """One answer, retrying transport failures. Failures are recorded here; the answer's outcome is returned
        unrecorded, for the caller to record with its verdict. Raises BudgetExhausted, before sending, when the
        job's budget cannot hold another call."""
        estimate = estimate_prompt_tokens(messages) + int(params.get("max_tokens", 256) * 0.5)
        policy = self.policy
        attempt = retries = limited = 0
        while True:
            attempt += 1
            reservation = await self.budget.reserve(self.estimated_cost(messages, params)) if self.budget else None
            outcome = CallOutcome(self.name, self.spec.model, params, messages, key, occurrence, attempt, 0)
            try:
                completion = await self._send(messages, params, response_format, estimate, outcome, journal)
            except TeacherError as exc:
                await self._settle(reservation, outcome.cost_usd)
                if isinstance(exc, ResponseFormatUnsupported) and response_format is not None:
                    raise
                if isinstance(exc, RateLimited):
                    limited += 1
                    # The provider said how long: wait that (plus jitter), not an ever-growing backoff.
                    wait = (exc.retry_after + self._rng.uniform(0.05, 0.1 + exc.retry_after * 0.1)
                            if exc.retry_after is not None else self._backoff(min(limited, 5), None))
                    await self.limiter.pause(wait)
                    if limited >= policy.max_rate_limited_waits:
                        raise
                    await self._sleep(wait)
                    continue
                if not exc.retryable or retries >= policy.attempts:
                    raise
                await self._sleep(self._backoff(retries, exc.retry_after))
                retries += 1
                continue
            except (Draining, LeaseLost):  # refused before sending: nothing was spent
                await self._settle(reservation, 0.0)
                raise
            except BaseException:
                # Cancelled with the request possibly sent: the provider may bill it, so it stays counted.
                await asyncio.shield(self._settle(reservation, outcome.cost_usd or (reservation.amount
                                                                                     if reservation else 0.0)))
                raise
            await self._settle(reservation, outcome.cost_usd)
            if outcome.error_kind == "Truncated":
                await journal.record_call(outcome)
                if retries >= policy.attempts:
                    raise Truncated(f"teacher '{self.name}': {outcome.error}", raw=completion.text)
                retries += 1
                await self._sleep(self._backoff(0, None, base=0.1))
                continue
            return completion, outcome

    async def _send(self, messages: list[Message], params: dict[str, Any], response_format: dict[str, Any] | None,
                    estimate: int, outcome: CallOutcome, journal: Journal) -> Completion:
        """One HTTP exchange through the limiter. A failure is recorded (and teaches the limiter) before it is
        raised; an answer fills `outcome`."""
        request = ChatRequest(self.spec.model, messages, params, response_format, self.policy.call_timeout)
        permit = await self.limiter.acquire(estimate)
        started = time.monotonic()
        try:
            async with journal.sending():  # refused (drain, lost lease) before anything is sent
                completion = await self.provider.complete(request)
        except TeacherError as exc:
            await self.limiter.release(permit, None)
            if isinstance(exc, RateLimited):
                await self.limiter.refused(permit, HeaderHint.from_headers(exc.rate_headers))
            self._fill_error(outcome, exc, started)
            await journal.record_call(outcome)
            self.meter.add(outcome)
            raise
        except BaseException as exc:  # cancelled (Ctrl-C, a unit timeout) or an adapter bug: never keep the slot
            await self.limiter.release(permit, None)
            if isinstance(exc, asyncio.CancelledError):
                # The provider may bill a request we stopped waiting for: keep it on the record.
                outcome.latency_ms = int((time.monotonic() - started) * 1000)
                outcome.error, outcome.error_kind = "cancelled before the answer arrived", "Cancelled"
                await asyncio.shield(journal.record_call(outcome))
            raise
        used = completion.usage.total_tokens or None
        await self.limiter.release(permit, used)
        elapsed = time.monotonic() - started
        await self.limiter.observe(HeaderHint.from_headers(completion.headers), estimate, elapsed=elapsed)
        outcome.latency_ms = int(elapsed * 1000)
        outcome.status = completion.status
        outcome.text = completion.text
        outcome.finish_reason = completion.finish_reason
        outcome.prompt_tokens = completion.usage.prompt_tokens
        outcome.completion_tokens = completion.usage.completion_tokens
        outcome.cost_usd = self.spec.call_cost(outcome.prompt_tokens, outcome.completion_tokens)
        if completion.finish_reason == "length":
            outcome.error = f"answer cut at max_tokens={params.get('max_tokens')} (finish_reason=length)"
            outcome.error_kind = "Truncated"
        self.meter.add(outcome)
        return completion

    async def _settle(self, reservation: Reservation | None, actual_usd: float) -> None:
        if reservation is not None:
            await self.budget.settle(reservation, actual_usd)

    def _fill_error(self, outcome: CallOutcome, exc: TeacherError, started: float) -> None:
        outcome.latency_ms = int((time.monotonic() - started) * 1000)
        outcome.status = exc.status
        outcome.error = str(exc)
        outcome.error_kind = type(exc).__name__
        if isinstance(exc, MalformedResponse):
            outcome.text = exc.raw

    async def aclose(self) -> None:
        await self.provider.aclose()
        await self.limiter.aclose()


class UnitTeacher:
    """The teacher as one unit sees it: bound to the unit's journal, so calls are recorded and replayable."""

    def __init__(self, teacher: TeacherClient, journal: Journal, *, output_attempts: int | None = None):
        self.teacher = teacher
        self.journal = journal
        self.output_attempts = output_attempts or teacher.policy.output_attempts
        self.call_ids: list[int] = []
        self._occurrences: dict[str, int] = {}

    @property
    def name(self) -> str:
        return self.teacher.name

    @property
    def model(self) -> str:
        return self.teacher.spec.model

    async def chat(self, messages: list[Message], *, schema: dict[str, Any] | None = None,
                   schema_name: str = "output", check: Check | None = None, **overrides: Any) -> Reply:
        """Ask for an answer. With `schema`, the reply's `.data` is JSON valid against it.

        `check` may refuse a reply with a reason (it is then asked again, up to `output_attempts`).
        Raises OutputRejected with the last reason and raw output when no attempt passes.
        """
        params = {**self.teacher.spec.sampling(), **{k: v for k, v in overrides.items() if v is not None}}
        schema_text = json.dumps(schema, sort_keys=True) if schema is not None else None
        key = request_key(self.teacher.name, self.model, messages, schema_text, params)
        occurrence = self._occurrences.get(key, 0)
        self._occurrences[key] = occurrence + 1

        stored = self.journal.accepted_reply(key, occurrence)
        if stored is not None:
            reply = self._parse(stored.text, schema_text)
            if reply is not None and not isinstance(reply, str):
                reply.call_id, reply.replayed = stored.call_id, True
                self.call_ids.append(stored.call_id)
                self.teacher.meter.replayed += 1
                return reply

        reason, raw = "no attempt was made", None
        for _ in range(self.output_attempts):
            sent, response_format = self._request(messages, schema, schema_name, schema_text)
            try:
                completion, outcome = await self.teacher.exchange(
                    sent, journal=self.journal, key=key, occurrence=occurrence, params=params,
                    response_format=response_format)
            except ResponseFormatUnsupported:
                self.teacher.json_mode = True  # this server has no json_schema: schema in the prompt from now on
                sent, response_format = self._request(messages, schema, schema_name, schema_text)
                completion, outcome = await self.teacher.exchange(
                    sent, journal=self.journal, key=key, occurrence=occurrence, params=params,
                    response_format=response_format)
            raw = completion.text
            parsed = self._parse(completion.text, schema_text)
            if isinstance(parsed, str):
                reason = parsed
            else:
                # Checks may run tools (a compiler's syntax check): off the event loop, so other units go on.
                reason = await asyncio.to_thread(check, parsed) if check else None
            outcome.accepted, outcome.reject_reason = reason is None, reason
            call_id = await self.journal.record_call(outcome)
            if reason is None:
                parsed.call_id = call_id
                self.call_ids.append(call_id)
                return parsed
        raise OutputRejected(f"{reason} (after {self.output_attempts} attempts)", raw=raw)

    def _request(self, messages: list[Message], schema: dict[str, Any] | None, schema_name: str,
                 schema_text: str | None) -> tuple[list[Message], dict[str, Any] | None]:
        if schema is None:
            return messages, None
        if self.teacher.json_mode:
            return [*messages, {"role": "user", "content": schema_prompt(schema_text or "{}")}], {"type": "json_object"}
        return messages, {"type": "json_schema", "json_schema": {
            "name": schema_name, "schema": schema, "strict": is_strict_compatible(schema)}}

    @staticmethod
    def _parse(text: str, schema_text: str | None) -> "Reply | str":
        """A Reply, or the reason the text is not acceptable output."""
        if schema_text is None:
            return Reply(text=text) if text.strip() else "empty answer"
        try:
            data = json.loads(text)
        except (ValueError, TypeError) as exc:
            return f"output is not JSON ({exc.__class__.__name__}: {str(exc)[:80]})"
        problem = first_problem(validator_for_schema_text(schema_text), data)
        if problem is not None:
            return f"output breaks the schema: {problem}"
        return Reply(text=text, data=data)


__all__ = ["TeacherClient", "UnitTeacher", "Reply", "Meter", "Journal", "CallOutcome", "StoredReply", "BadRequest",
           "backoff_delay"]
