"""TeacherClient and UnitTeacher against the simulator: real HTTP on loopback, the real openai / mistralai SDKs.

Nothing under test is mocked. `MemoryJournal` is a small but complete implementation of the `Journal`
protocol (the execution core's database-backed one does the same with tables).
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import time
import traceback

import jsonschema
import pytest

from gen.config import Prices, TeacherSpec
from gen.errors import (CallTimeout, MalformedResponse, OutputRejected, ServerError, TeacherError, Truncated,
                        Unreachable)
from gen.providers import make_provider
from gen.ratelimit import LocalRateLimiter
from gen.simulator import SimConfig, Simulator
from gen.teacher import CallOutcome, StoredReply, TeacherClient, UnitTeacher

KEY = "sk-test-secret"
PROVIDERS = ["openai-compatible", "mistral"]

ASK = [{"role": "system", "content": "You are a patient teacher."},
       {"role": "user", "content": "Explain how lighthouses guide ships along rocky coasts."}]

LESSON_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 3},
        "count": {"type": "integer", "minimum": 1, "maximum": 9},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["title", "count", "tags"],
    "additionalProperties": False,
}


class MemoryJournal:
    """The `gen.teacher.Journal` protocol in memory: every outcome, and which calls were accepted or rejected."""

    def __init__(self) -> None:
        self.calls: dict[int, CallOutcome] = {}
        self.accepted: list[int] = []
        self.rejected: dict[int, str] = {}

    async def record_call(self, outcome: CallOutcome) -> int:
        call_id = len(self.calls) + 1
        self.calls[call_id] = outcome
        if outcome.accepted is True:
            self.accepted.append(call_id)
        elif outcome.accepted is False:
            self.rejected[call_id] = outcome.reject_reason
        return call_id

    @contextlib.asynccontextmanager
    async def sending(self):
        yield

    def accepted_reply(self, request_key: str, occurrence: int) -> StoredReply | None:
        for call_id in self.accepted:
            outcome = self.calls[call_id]
            if outcome.request_key == request_key and outcome.occurrence == occurrence:
                return StoredReply(call_id, outcome.text or "")
        return None

    @property
    def outcomes(self) -> list[CallOutcome]:
        return list(self.calls.values())

    def kinds(self) -> list[str | None]:
        return [o.error_kind for o in self.outcomes]


@pytest.fixture(autouse=True)
def sim_key(monkeypatch):
    monkeypatch.setenv("SIM_KEY", KEY)


def make_spec(provider: str, sim: Simulator | None, **overrides) -> TeacherSpec:
    base_url = None
    if sim is not None:
        base_url = sim.base_url if provider == "openai-compatible" else sim.server_url
    settings = dict(name="main", provider=provider, model="sim-1", base_url=base_url, api_key_env="SIM_KEY",
                    timeout=5.0, max_retries=2, max_tokens=400)
    settings.update(overrides)
    return TeacherSpec(**settings)


def make_teacher(spec: TeacherSpec) -> TeacherClient:
    """Build inside the event loop that will use it (the SDK clients and the semaphore bind to it)."""
    limiter = LocalRateLimiter(rpm=spec.rpm, tpm=spec.tpm, max_concurrency=spec.max_concurrency)
    return TeacherClient(spec, make_provider(spec), limiter)


def run_with_teacher(spec: TeacherSpec, body):
    """asyncio.run(body(teacher)) with a teacher built and closed inside that loop."""
    async def main():
        teacher = make_teacher(spec)
        try:
            return await body(teacher)
        finally:
            await teacher.aclose()

    return asyncio.run(main())


async def flip_when(sim: Simulator, fault: str, count: int, **patch) -> None:
    """Reconfigure the simulator once it has injected `count` faults of one kind."""
    deadline = time.monotonic() + 20
    while (await asyncio.to_thread(sim.stats))["faults"][fault] < count:
        assert time.monotonic() < deadline, f"the simulator never injected {count} '{fault}' faults"
        await asyncio.sleep(0.01)
    await asyncio.to_thread(sim.configure, **patch)


def raises(coro_factory):
    """Run a coroutine that must fail; returns the exception and the seconds it took."""
    started = time.monotonic()
    try:
        coro_factory()
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return exc, time.monotonic() - started
    raise AssertionError("expected an exception")


# ----------------------------------------------------------------------------------------- 1. success
@pytest.mark.parametrize("provider", PROVIDERS)
def test_plain_and_json_schema_answers_are_recorded_with_usage_and_cost(provider):
    prices = Prices(input_per_million=3.0, output_per_million=15.0)
    with Simulator(SimConfig(latency=0.01, seed=11)) as sim:
        spec = make_spec(provider, sim, prices=prices, temperature=0.2, seed=7)
        journal = MemoryJournal()

        async def body(teacher):
            unit = UnitTeacher(teacher, journal, output_attempts=3)
            plain = await unit.chat(ASK)
            structured = await unit.chat(ASK, schema=LESSON_SCHEMA, schema_name="lesson")
            return teacher, unit, plain, structured

        teacher, unit, plain, structured = run_with_teacher(spec, body)
        stats = sim.stats()

    assert plain.text.strip() and plain.data is None and not plain.replayed
    assert "lighthouses" in plain.text or len(plain.text) > 40
    jsonschema.validate(structured.data, LESSON_SCHEMA)
    assert json.loads(structured.text) == structured.data

    assert stats["requests"] == 2 and stats["by_status"] == {"200": 2}
    assert len(journal.outcomes) == 2
    assert journal.accepted == [plain.call_id, structured.call_id] == unit.call_ids == [1, 2]
    assert journal.rejected == {}
    for outcome, reply in zip(journal.outcomes, (plain, structured)):
        assert outcome.teacher == "main" and outcome.model == "sim-1"
        assert outcome.status == 200 and outcome.finish_reason == "stop"
        assert outcome.error is None and outcome.error_kind is None
        assert outcome.attempt == 1 and outcome.occurrence == 0
        assert outcome.text == reply.text
        assert outcome.messages == ASK  # json_schema mode: no schema text in the prompt
        assert outcome.params == {"max_tokens": 400, "temperature": 0.2, "seed": 7}
        assert outcome.prompt_tokens > 0 and outcome.completion_tokens > 0
        assert outcome.cost_usd == pytest.approx(
            (outcome.prompt_tokens * 3.0 + outcome.completion_tokens * 15.0) / 1e6)
        assert outcome.latency_ms >= 0
    # the usage the journal holds is the usage the server charged
    assert sum(o.prompt_tokens for o in journal.outcomes) == stats["prompt_tokens"]
    assert sum(o.completion_tokens for o in journal.outcomes) == stats["completion_tokens"]
    assert journal.outcomes[0].request_key != journal.outcomes[1].request_key
    assert teacher.meter.calls == 2 and teacher.meter.failed_calls == 0
    assert teacher.meter.cost_usd == pytest.approx(sum(o.cost_usd for o in journal.outcomes))
    assert not teacher.json_mode


# ----------------------------------------------------------------------------------------- 2. 429
@pytest.mark.parametrize("provider", PROVIDERS)
def test_429_is_retried_after_retry_after_and_does_not_use_up_max_retries(provider):
    # The server allows 1 request per second; the teacher believes it may send 100 per second.
    with Simulator(SimConfig(latency=0.01, rpm=60, seed=12)) as sim:
        spec = make_spec(provider, sim, rpm=6000, max_retries=0)
        journals = [MemoryJournal() for _ in range(3)]

        async def body(teacher):
            async def one(journal):
                started = time.monotonic()
                reply = await UnitTeacher(teacher, journal).chat(ASK)
                return reply, time.monotonic() - started

            started = time.monotonic()
            results = await asyncio.gather(*(one(j) for j in journals))
            return teacher, results, time.monotonic() - started

        teacher, results, total = run_with_teacher(spec, body)
        stats = sim.stats()

    assert all(reply.text for reply, _ in results)
    assert stats["by_status"].get("200") == 3
    limited = [o for j in journals for o in j.outcomes if o.error_kind == "RateLimited"]
    assert limited, "the burst should have met at least one 429"
    assert len(limited) == stats["served_429"] == teacher.meter.rate_limited
    for outcome in limited:
        assert outcome.status == 429 and "429" in outcome.error and outcome.text is None
    retried = 0
    for journal, (reply, elapsed) in zip(journals, results):
        kinds = journal.kinds()
        assert kinds[-1] is None and all(k == "RateLimited" for k in kinds[:-1])
        assert [o.attempt for o in journal.outcomes] == list(range(1, len(kinds) + 1))
        if len(kinds) > 1:
            retried += 1
            # Retry-After was ~1 s: a unit that met a 429 cannot have finished sooner
            assert elapsed >= 0.8, (elapsed, kinds)
        assert journal.accepted == [reply.call_id]
    assert retried >= 1
    # three requests through a 1-per-second server take about two seconds, never much less
    assert 1.5 <= total < 20


# ----------------------------------------------------------------------------------------- 3. 5xx
@pytest.mark.parametrize("provider", PROVIDERS)
def test_server_errors_are_retried_until_the_server_recovers(provider):
    with Simulator(SimConfig(latency=0.005, error_rate=1.0, seed=13)) as sim:
        spec = make_spec(provider, sim, max_retries=6)
        journal = MemoryJournal()

        async def body(teacher):
            flip = asyncio.create_task(flip_when(sim, "error", 2, error_rate=0.0))
            reply = await UnitTeacher(teacher, journal).chat(ASK)
            await flip
            return reply

        reply = run_with_teacher(spec, body)
        stats = sim.stats()

    assert reply.text
    kinds = journal.kinds()
    assert len(kinds) >= 3 and kinds[-1] is None and set(kinds[:-1]) == {"ServerError"}
    for outcome in journal.outcomes[:-1]:
        assert outcome.status in (500, 503) and "server error" in outcome.error
    assert [o.attempt for o in journal.outcomes] == list(range(1, len(kinds) + 1))
    assert journal.accepted == [reply.call_id] == [len(kinds)]
    assert stats["requests"] == len(kinds) and stats["faults"]["error"] == len(kinds) - 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_server_errors_give_up_after_max_retries(provider):
    with Simulator(SimConfig(latency=0.005, error_rate=1.0, seed=14)) as sim:
        spec = make_spec(provider, sim, max_retries=2)
        journal = MemoryJournal()
        exc, elapsed = raises(lambda: run_with_teacher(spec, lambda t: UnitTeacher(t, journal).chat(ASK)))
        stats = sim.stats()

    assert isinstance(exc, ServerError) and exc.status in (500, 503)
    assert journal.kinds() == ["ServerError"] * 3  # max_retries + 1 attempts, then no output retries
    assert [o.attempt for o in journal.outcomes] == [1, 2, 3]
    assert journal.accepted == [] and journal.rejected == {}
    assert stats["requests"] == 3
    assert 0.7 <= elapsed < 10  # two backoffs (0.25-0.5 s, then 0.5-1 s) were observed


def test_the_retry_policy_is_built_from_the_job_file_and_is_what_the_teacher_follows():
    from gen.config import RetryPolicy, parse_job

    job = parse_job({"name": "p", "instructor": {"type": "respond"}, "run": {"output_attempts": 5},
                     "teachers": {"main": {"provider": "openai-compatible", "model": "m", "base_url": "http://x",
                                           "max_retries": 1, "timeout": 7}}})
    policy = RetryPolicy.of(job.teachers["main"], job.run)
    assert (policy.attempts, policy.call_timeout, policy.output_attempts) == (1, 7, 5)
    assert dataclasses.is_dataclass(policy) and policy.__dataclass_params__.frozen
    with Simulator(SimConfig(latency=0.005, error_rate=1.0, seed=16)) as sim:
        spec = make_spec("openai-compatible", sim, max_retries=5)
        journal = MemoryJournal()

        async def body(_):
            # One policy, one place: a policy handed to the client overrides the spec's defaults everywhere.
            teacher = TeacherClient(spec, make_provider(spec), LocalRateLimiter(), policy=RetryPolicy(
                attempts=1, backoff_base=0.01, backoff_cap=0.02, call_timeout=5.0, output_attempts=2))
            try:
                assert UnitTeacher(teacher, journal).output_attempts == 2
                return await UnitTeacher(teacher, journal).chat(ASK)
            finally:
                await teacher.aclose()

        exc, _ = raises(lambda: run_with_teacher(spec, body))
    assert isinstance(exc, ServerError)
    assert [o.attempt for o in journal.outcomes] == [1, 2]  # attempts=1: one retry, not the spec's five


# ----------------------------------------------------------------------------------------- 4. hang
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_hanging_server_times_out_promptly(provider):
    with Simulator(SimConfig(hang_rate=1.0, hang_seconds=30.0, seed=15)) as sim:
        spec = make_spec(provider, sim, timeout=0.5, max_retries=1)
        journal = MemoryJournal()
        exc, elapsed = raises(lambda: run_with_teacher(spec, lambda t: UnitTeacher(t, journal).chat(ASK)))
        stats = sim.stats()

    assert isinstance(exc, CallTimeout) and "0.5s" in str(exc)
    assert journal.kinds() == ["CallTimeout", "CallTimeout"]
    for outcome in journal.outcomes:
        assert outcome.status is None and outcome.text is None
        assert 400 <= outcome.latency_ms < 3000
    assert stats["faults"]["hang"] == 2
    assert 1.0 <= elapsed < 6  # two 0.5 s timeouts and one backoff, far from the 30 s hang


# ----------------------------------------------------------------------------------------- 5. malformed
@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_bodies_raise_malformed_response(provider):
    with Simulator(SimConfig(latency=0.005, malformed_rate=1.0, seed=16)) as sim:
        spec = make_spec(provider, sim, max_retries=1)
        journal = MemoryJournal()
        exc, _ = raises(lambda: run_with_teacher(spec, lambda t: UnitTeacher(t, journal).chat(ASK)))
        stats = sim.stats()

    assert isinstance(exc, MalformedResponse) and exc.status == 200
    assert journal.kinds() == ["MalformedResponse", "MalformedResponse"]
    for outcome in journal.outcomes:
        # the unreadable body is kept for diagnosis
        assert outcome.status == 200 and outcome.text and outcome.text.startswith('{"id": "chatcmpl-sim-')
        with pytest.raises(ValueError):
            json.loads(outcome.text)
    assert stats["faults"]["malformed"] == 2 and journal.accepted == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_then_fixed_succeeds(provider):
    with Simulator(SimConfig(latency=0.005, malformed_rate=1.0, seed=17)) as sim:
        spec = make_spec(provider, sim, max_retries=4)
        journal = MemoryJournal()

        async def body(teacher):
            flip = asyncio.create_task(flip_when(sim, "malformed", 1, malformed_rate=0.0))
            reply = await UnitTeacher(teacher, journal).chat(ASK, schema=LESSON_SCHEMA)
            await flip
            return reply

        reply = run_with_teacher(spec, body)

    jsonschema.validate(reply.data, LESSON_SCHEMA)
    kinds = journal.kinds()
    assert len(kinds) >= 2 and kinds[-1] is None and set(kinds[:-1]) == {"MalformedResponse"}
    assert journal.accepted == [reply.call_id]


# ----------------------------------------------------------------------------------------- 6. truncated
@pytest.mark.parametrize("provider", PROVIDERS)
def test_truncated_answers_are_failed_attempts(provider):
    with Simulator(SimConfig(latency=0.005, truncate_rate=1.0, seed=18)) as sim:
        spec = make_spec(provider, sim, max_retries=2, prices=Prices(1.0, 1.0))
        journal = MemoryJournal()
        exc, _ = raises(lambda: run_with_teacher(spec, lambda t: UnitTeacher(t, journal).chat(ASK)))
        stats = sim.stats()

    assert isinstance(exc, Truncated) and "finish_reason=length" in str(exc)
    assert journal.kinds() == ["Truncated"] * 3
    for outcome in journal.outcomes:
        assert outcome.status == 200 and outcome.finish_reason == "length"
        assert outcome.text and "max_tokens=400" in outcome.error
        assert outcome.completion_tokens > 0 and outcome.cost_usd > 0  # a cut answer is still paid for
    assert exc.raw == journal.outcomes[-1].text
    assert journal.accepted == [] and journal.rejected == {}
    assert stats["faults"]["truncate"] == 3


# ----------------------------------------------------------------------------------------- 7. schema
@pytest.mark.parametrize("provider", PROVIDERS)
def test_schema_violations_are_rejected_then_output_rejected(provider):
    with Simulator(SimConfig(latency=0.005, schema_violation_rate=1.0, seed=19)) as sim:
        spec = make_spec(provider, sim)
        journal = MemoryJournal()
        exc, _ = raises(lambda: run_with_teacher(
            spec, lambda t: UnitTeacher(t, journal, output_attempts=3).chat(ASK, schema=LESSON_SCHEMA)))
        stats = sim.stats()

    assert isinstance(exc, OutputRejected) and "after 3 attempts" in str(exc)
    assert stats["faults"]["schema_violation"] == 3 and stats["requests"] == 3
    # each HTTP exchange worked; each output was refused, with the path inside the document
    assert journal.kinds() == [None, None, None]
    assert sorted(journal.rejected) == [1, 2, 3] and journal.accepted == []
    for call_id, reason in journal.rejected.items():
        assert re.match(r"output breaks the schema: (title|count|tags)\b", reason), reason
    assert exc.reason.startswith(journal.rejected[3])
    assert exc.raw == journal.outcomes[-1].text
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(exc.raw), LESSON_SCHEMA)


def test_a_check_can_refuse_a_reply():
    with Simulator(SimConfig(latency=0.005, seed=20)) as sim:
        spec = make_spec("openai-compatible", sim)
        journal = MemoryJournal()
        seen = []

        def check(reply):
            seen.append(reply.text)
            return "too early" if len(seen) < 2 else None

        reply = run_with_teacher(spec, lambda t: UnitTeacher(t, journal).chat(ASK, check=check))

    assert reply.text == seen[1] and reply.call_id == 2
    assert journal.rejected == {1: "too early"} and journal.accepted == [2]


# ----------------------------------------------------------------------------------------- 8. json mode
@pytest.mark.parametrize("provider", PROVIDERS)
def test_refused_json_schema_switches_to_json_mode_with_the_schema_in_the_prompt(provider):
    with Simulator(SimConfig(latency=0.005, reject_json_schema=True, seed=21)) as sim:
        spec = make_spec(provider, sim)
        journal = MemoryJournal()

        async def body(teacher):
            unit = UnitTeacher(teacher, journal)
            first = await unit.chat(ASK, schema=LESSON_SCHEMA)
            mode_after_first = teacher.json_mode
            second = await unit.chat(ASK, schema=LESSON_SCHEMA)
            return teacher, mode_after_first, first, second

        teacher, mode_after_first, first, second = run_with_teacher(spec, body)
        stats = sim.stats()

    assert mode_after_first and teacher.json_mode
    for reply in (first, second):
        jsonschema.validate(reply.data, LESSON_SCHEMA)
    assert journal.kinds() == ["ResponseFormatUnsupported", None, None]
    refused, answered, again = journal.outcomes
    assert refused.status == 400 and "response_format" in refused.error
    assert refused.messages == ASK
    schema_text = json.dumps(LESSON_SCHEMA, sort_keys=True)
    for outcome in (answered, again):
        assert outcome.messages[:2] == ASK and len(outcome.messages) == 3
        assert schema_text in outcome.messages[-1]["content"]
    # the refusal is learnt once: the second chat went straight to JSON mode
    assert stats["by_status"] == {"400": 1, "200": 2}
    assert journal.accepted == [first.call_id, second.call_id] == [2, 3]


# ----------------------------------------------------------------------------------------- 9. replay
def test_accepted_answers_are_replayed_without_a_request():
    with Simulator(SimConfig(latency=0.005, seed=22)) as sim:
        spec = make_spec("openai-compatible", sim)
        journal = MemoryJournal()

        first = run_with_teacher(spec, lambda t: UnitTeacher(t, journal).chat(ASK, schema=LESSON_SCHEMA))
        requests_before = sim.stats()["requests"]
        assert requests_before == 1

        async def rerun(teacher):
            # the same unit, run again (a crash, a redelivery): same journal, new UnitTeacher
            unit = UnitTeacher(teacher, journal)
            replayed = await unit.chat(ASK, schema=LESSON_SCHEMA)
            requests_after_replay = (await asyncio.to_thread(sim.stats))["requests"]
            fresh = await unit.chat(ASK, schema=LESSON_SCHEMA)  # second occurrence: never answered before
            return teacher, unit, replayed, requests_after_replay, fresh

        teacher, unit, replayed, requests_after_replay, fresh = run_with_teacher(spec, rerun)
        requests_end = sim.stats()["requests"]

    assert replayed.replayed and replayed.call_id == first.call_id
    assert replayed.text == first.text and replayed.data == first.data
    assert requests_after_replay == requests_before
    assert teacher.meter.replayed == 1 and teacher.meter.calls == 1
    assert not fresh.replayed and requests_end == requests_before + 1
    assert journal.outcomes[-1].occurrence == 1
    assert unit.call_ids == [first.call_id, fresh.call_id]


def test_a_stored_answer_that_no_longer_validates_is_asked_again():
    with Simulator(SimConfig(latency=0.005, seed=23)) as sim:
        spec = make_spec("openai-compatible", sim)
        journal = MemoryJournal()
        first = run_with_teacher(spec, lambda t: UnitTeacher(t, journal).chat(ASK, schema=LESSON_SCHEMA))
        journal.calls[first.call_id].text = '{"title": "x"}'  # what the store holds no longer validates
        again = run_with_teacher(spec, lambda t: UnitTeacher(t, journal).chat(ASK, schema=LESSON_SCHEMA))
        requests = sim.stats()["requests"]

    assert not again.replayed and requests == 2
    jsonschema.validate(again.data, LESSON_SCHEMA)


# ----------------------------------------------------------------------------------------- 10. keys
def _texts(value) -> str:
    return json.dumps(value, default=repr, ensure_ascii=False)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_api_key_never_reaches_the_journal_or_an_error(provider):
    faults = [dict(error_rate=1.0), dict(malformed_rate=1.0), dict(truncate_rate=1.0),
              dict(schema_violation_rate=1.0), dict(hang_rate=1.0), dict()]
    journal = MemoryJournal()
    errors: list[BaseException] = []
    with Simulator(SimConfig(latency=0.005, hang_seconds=30.0, reject_json_schema=True, seed=24)) as sim:
        spec = make_spec(provider, sim, max_retries=0, timeout=0.5)

        async def body(teacher):
            for patch in faults:
                await asyncio.to_thread(sim.configure, error_rate=0.0, malformed_rate=0.0, truncate_rate=0.0,
                                        schema_violation_rate=0.0, hang_rate=0.0)
                await asyncio.to_thread(sim.configure, **patch)
                try:
                    await UnitTeacher(teacher, journal, output_attempts=1).chat(ASK, schema=LESSON_SCHEMA)
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)

        run_with_teacher(spec, body)

    # nothing listens on port 9: an unreachable host
    nowhere = make_spec(provider, None, base_url="http://127.0.0.1:9" + ("/v1" if provider != "mistral" else ""),
                        max_retries=0, timeout=2.0)
    exc, _ = raises(lambda: run_with_teacher(nowhere, lambda t: UnitTeacher(t, journal).chat(ASK)))
    assert isinstance(exc, Unreachable)
    errors.append(exc)

    kinds = set(journal.kinds())
    assert {"ResponseFormatUnsupported", "ServerError", "MalformedResponse", "Truncated", "CallTimeout",
            "Unreachable", None} <= kinds
    assert {type(e).__name__ for e in errors} >= {"ServerError", "MalformedResponse", "Truncated",
                                                  "OutputRejected", "CallTimeout", "Unreachable"}
    for outcome in journal.outcomes:
        assert KEY not in _texts(vars(outcome))
        assert KEY not in repr(outcome)
    for err in errors:
        shown = "".join(traceback.format_exception(err))
        assert KEY not in shown and KEY not in repr(err)
        assert KEY not in str(getattr(err, "raw", "") or "")
        assert KEY not in _texts(vars(err))


# ----------------------------------------------------------------------------------------- 11. pacing
def test_local_limiter_paces_requests_at_the_stated_rpm():
    async def sequential():
        limiter = LocalRateLimiter(rpm=600)
        starts = []
        for _ in range(20):
            permit = await limiter.acquire(10)
            starts.append(permit.granted_at)
            await limiter.release(permit, 10)
        return starts

    async def concurrent():
        limiter = LocalRateLimiter(rpm=600, max_concurrency=5)

        async def one():
            permit = await limiter.acquire(10)
            await asyncio.sleep(0.01)
            await limiter.release(permit, 10)
            return permit.granted_at

        return sorted(await asyncio.gather(*(one() for _ in range(20))))

    started = time.monotonic()
    starts = asyncio.run(sequential())
    elapsed = time.monotonic() - started
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    # Slots sit on an absolute timeline: a start a little late is followed by one a little less than an
    # interval after it (no drift), but never by a burst, and the average holds the stated rate.
    assert min(gaps) >= 0.05 and sum(gaps) / len(gaps) >= 0.099, gaps
    assert starts[-1] - starts[0] >= 1.89 and 1.89 <= elapsed < 4

    starts = asyncio.run(concurrent())
    assert starts[-1] - starts[0] >= 1.85
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= 0.05 and sum(gaps) / len(gaps) >= 0.097, gaps


def test_local_limiter_keeps_the_interval_after_a_late_wake_up():
    # The event loop is blocked for 0.2 s while a caller waits for its slot (a busy process): that caller
    # wakes late, and the next one must still start a full interval after it, not right away.
    async def main():
        limiter = LocalRateLimiter(rpm=600)

        async def busy_loop():
            await asyncio.sleep(0.05)
            time.sleep(0.2)  # blocks the whole loop on purpose

        busy = asyncio.create_task(busy_loop())
        starts = []
        for _ in range(4):
            permit = await limiter.acquire(1)
            starts.append(permit.granted_at)
            await limiter.release(permit, 1)
        await busy
        return starts

    starts = asyncio.run(main())
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert gaps[0] >= 0.2 and min(gaps) >= 0.099, gaps


def test_local_limiter_pause_holds_every_caller():
    async def main():
        limiter = LocalRateLimiter()
        started = time.monotonic()
        await limiter.pause(0.4)
        permits = await asyncio.gather(*(limiter.acquire(1) for _ in range(3)))
        return [p.granted_at - started for p in permits]

    waits = asyncio.run(main())
    assert all(0.39 <= w < 2 for w in waits), waits


def test_local_limiter_caps_concurrency():
    async def main():
        limiter = LocalRateLimiter(max_concurrency=2)
        in_flight = peak = 0

        async def one():
            nonlocal in_flight, peak
            permit = await limiter.acquire(1)
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.02)
            in_flight -= 1
            await limiter.release(permit, 1)

        await asyncio.gather(*(one() for _ in range(8)))
        return peak

    assert asyncio.run(main()) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_teacher_paced_at_the_servers_rpm_meets_no_429(provider):
    with Simulator(SimConfig(latency=0.02, rpm=600, seed=25)) as sim:
        spec = make_spec(provider, sim, rpm=600, max_concurrency=10)
        journals = [MemoryJournal() for _ in range(30)]

        async def body(teacher):
            started = time.monotonic()
            replies = await asyncio.gather(*(UnitTeacher(teacher, j).chat(ASK) for j in journals))
            return teacher, replies, time.monotonic() - started

        teacher, replies, elapsed = run_with_teacher(spec, body)
        stats = sim.stats()

    assert all(r.text for r in replies)
    assert stats["served_429"] == 0 and stats["by_status"] == {"200": 30}
    assert teacher.meter.rate_limited == 0 and teacher.meter.calls == 30
    assert all(j.kinds() == [None] for j in journals)
    assert 2.8 <= elapsed < 15  # 30 requests at 10 per second


def test_a_cancelled_call_gives_its_concurrency_slot_back():
    # A unit cancelled mid-call (Ctrl-C, a unit timeout) must not keep its slot: with max_concurrency=1 a
    # leaked slot would block every later call of this teacher forever.
    with Simulator(SimConfig(hang_rate=1.0, hang_seconds=30.0, seed=26)) as sim:
        spec = make_spec("openai-compatible", sim, max_concurrency=1, timeout=10.0)

        async def body(teacher):
            hung = asyncio.create_task(UnitTeacher(teacher, MemoryJournal()).chat(ASK))
            await asyncio.sleep(0.3)
            hung.cancel()
            with pytest.raises(asyncio.CancelledError):
                await hung
            await asyncio.to_thread(sim.configure, hang_rate=0.0)
            return await asyncio.wait_for(UnitTeacher(teacher, MemoryJournal()).chat(ASK), 5)

        reply = run_with_teacher(spec, body)
    assert reply.text


@pytest.mark.parametrize("provider", PROVIDERS)
def test_truncated_then_complete_succeeds(provider):
    with Simulator(SimConfig(latency=0.005, truncate_rate=1.0, seed=27)) as sim:
        spec = make_spec(provider, sim, max_retries=4)
        journal = MemoryJournal()

        async def body(teacher):
            flip = asyncio.create_task(flip_when(sim, "truncate", 1, truncate_rate=0.0))
            reply = await UnitTeacher(teacher, journal).chat(ASK, schema=LESSON_SCHEMA)
            await flip
            return reply

        reply = run_with_teacher(spec, body)

    jsonschema.validate(reply.data, LESSON_SCHEMA)
    kinds = journal.kinds()
    assert len(kinds) >= 2 and kinds[-1] is None and set(kinds[:-1]) == {"Truncated"}
    assert journal.accepted == [reply.call_id] and journal.rejected == {}


def test_the_teachers_of_a_process_verify_servers_with_one_shared_default_tls_context():
    """Each SDK client used to load the system's CA certificates into a TLS context of its own (20-30 ms of CPU
    per teacher, before the first request); every teacher of a process now shares the one context the SDK would
    have built: certificates and host names verified, the same CA certificates loaded."""
    import ssl

    import httpx2

    providers = [make_provider(make_spec(p, None, name=f"t{i}")) for i, p in enumerate(PROVIDERS * 2)]
    contexts = [(getattr(p, "http", None) or p.client._client)._transport.ssl_context for p in providers]
    assert all(ctx is contexts[0] for ctx in contexts)
    shared = contexts[0]
    assert shared.verify_mode == ssl.CERT_REQUIRED and shared.check_hostname
    assert shared.get_ca_certs() == httpx2.create_ssl_context().get_ca_certs()


def test_teacher_error_family():
    # what the teacher relies on when it decides to retry
    assert ServerError("x").retryable and Truncated("x").retryable and CallTimeout("x").retryable
    assert issubclass(MalformedResponse, TeacherError) and issubclass(Unreachable, TeacherError)


# ------------------------------------------------------------------------- x-ratelimit-remaining headers
def test_remaining_requests_at_zero_pause_the_teacher_before_the_provider_refuses():
    """The teacher states no limit; the provider allows one request a second and says so in its headers.
    Reading `x-ratelimit-remaining-requests: 0`, the teacher waits for the reset instead of earning a 429."""
    with Simulator(SimConfig(latency=0.0, rpm=60)) as sim:
        spec = make_spec("openai-compatible", sim, max_concurrency=1)
        journal = MemoryJournal()

        async def body(teacher):
            started = time.monotonic()
            for i in range(3):
                await UnitTeacher(teacher, journal).chat([{"role": "user", "content": f"Question {i}?"}])
            return time.monotonic() - started

        elapsed = run_with_teacher(spec, body)
        stats = sim.stats()
    assert stats["served_429"] == 0 and stats["by_status"].get("200") == 3
    assert elapsed >= 1.5  # two waits for the provider's reset
    assert journal.kinds() == [None, None, None]
