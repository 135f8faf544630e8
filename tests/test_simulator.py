"""Teacher simulator: real HTTP on loopback, real openai / mistralai SDKs, no mocks."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import time

import aiohttp
import jsonschema
import pytest
from click.testing import CliRunner
from mistralai.client import Mistral
from openai import AsyncOpenAI

from gen.simulator import SimConfig, Simulator, start_simulator
from gen.simulator.buckets import format_duration
from gen.simulator.command import simulate

USER = [{"role": "user", "content": "Explain how lighthouses guide ships along rocky coasts."}]

PLAN_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 3, "maxLength": 40},
        "level": {"type": "string", "enum": ["easy", "medium", "hard"]},
        "steps": {
            "type": "array",
            "minItems": 2,
            "maxItems": 5,
            "items": {"$ref": "#/$defs/step"},
        },
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "done": {"type": "boolean"},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "required": ["title", "level", "steps", "done"],
    "additionalProperties": False,
    "$defs": {
        "step": {
            "type": "object",
            "properties": {
                "index": {"type": "integer", "minimum": 1, "maximum": 9},
                "description": {"type": "string"},
                "code": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                "kind": {"const": "step"},
            },
            "required": ["index", "description", "kind"],
            "additionalProperties": False,
        }
    },
}

RIDDLES_SCHEMA = {
    "type": "object",
    "properties": {
        "riddles": {
            "type": "array",
            "minItems": 3,
            "maxItems": 5,
            "items": {
                "type": "object",
                "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
                "required": ["question", "answer"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["riddles"],
    "additionalProperties": False,
}


def json_schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}


async def post(url: str, body, timeout: float = 10.0) -> tuple[int, dict, str]:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        async with session.post(url, data=data, headers={"Authorization": "Bearer secret"}) as resp:
            return resp.status, dict(resp.headers), await resp.text()


def chat(sim: Simulator, body: dict, timeout: float = 10.0) -> tuple[int, dict, str]:
    return asyncio.run(post(f"{sim.base_url}/chat/completions", body, timeout))


def chat_json(sim: Simulator, **fields) -> dict:
    status, _, text = chat(sim, {"model": "m", "messages": USER, **fields})
    assert status == 200, text
    return json.loads(text)


async def get_json(url: str) -> dict:
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            return await resp.json()


# ------------------------------------------------------------------- SDKs
def test_openai_sdk_parses_plain_answer():
    async def go(sim):
        client = AsyncOpenAI(api_key="sk-test", base_url=sim.base_url, max_retries=0)
        reply = await client.chat.completions.create(model="teacher", messages=USER, temperature=0.7)
        await client.close()
        return reply

    with Simulator(SimConfig(seed=1)) as sim:
        reply = asyncio.run(go(sim))
    content = reply.choices[0].message.content
    assert reply.model == "teacher" and reply.choices[0].finish_reason == "stop"
    assert 2 <= content.count(".") and len(content) > 40
    assert reply.usage.prompt_tokens == math.ceil(len(USER[0]["content"]) / 4)
    assert reply.usage.completion_tokens == math.ceil(len(content) / 4)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_mistral_sdk_parses_plain_and_json_schema_answers():
    async def go(sim):
        client = Mistral(api_key="test", server_url=sim.server_url)
        plain = await client.chat.complete_async(model="teacher", messages=USER)
        structured = await client.chat.complete_async(
            model="teacher", messages=USER, response_format=json_schema_format(PLAN_SCHEMA))
        return plain, structured

    with Simulator(SimConfig(seed=2)) as sim:
        plain, structured = asyncio.run(go(sim))
    assert plain.choices[0].message.content and plain.choices[0].finish_reason == "stop"
    assert plain.usage.total_tokens > 0
    jsonschema.validate(json.loads(structured.choices[0].message.content), PLAN_SCHEMA)


def test_models_endpoint():
    with Simulator() as sim:
        models = asyncio.run(get_json(f"{sim.base_url}/models"))
        bare = asyncio.run(get_json(f"{sim.server_url}/models"))
    assert models == bare
    assert models["data"][0] == {"id": "sim-1", "object": "model", "created": 0, "owned_by": "gen-simulator"}


# ------------------------------------------------------------- content
def test_json_schema_answers_validate_and_vary():
    async def go(sim):
        client = AsyncOpenAI(api_key="sk-test", base_url=sim.base_url, max_retries=0)
        replies = await asyncio.gather(*[
            client.chat.completions.create(model="m", messages=USER,
                                           response_format=json_schema_format(PLAN_SCHEMA))
            for _ in range(20)])
        await client.close()
        return [json.loads(r.choices[0].message.content) for r in replies]

    with Simulator(SimConfig(seed=3)) as sim:
        documents = asyncio.run(go(sim))
    for document in documents:
        jsonschema.validate(document, PLAN_SCHEMA)
    assert len({d["title"] for d in documents}) >= 15
    descriptions = [s["description"] for d in documents for s in d["steps"]]
    assert len(set(descriptions)) == len(descriptions)


def test_json_object_uses_schema_from_prompt_or_wraps_text():
    messages = [
        {"role": "system", "content": "Answer with JSON matching:\n```json\n" + json.dumps(RIDDLES_SCHEMA) + "\n```"},
        {"role": "user", "content": "Three riddles about the sea, please."},
    ]
    with Simulator(SimConfig(seed=4)) as sim:
        reply = chat_json(sim, messages=messages, response_format={"type": "json_object"})
        fallback = chat_json(sim, response_format={"type": "json_object"})
    jsonschema.validate(json.loads(reply["choices"][0]["message"]["content"]), RIDDLES_SCHEMA)
    wrapped = json.loads(fallback["choices"][0]["message"]["content"])
    assert list(wrapped) == ["result"] and isinstance(wrapped["result"], str)


def test_riddle_questions_do_not_collide_across_50_requests():
    with Simulator(SimConfig(seed=5)) as sim:
        questions = []
        for _ in range(50):
            reply = chat_json(sim, response_format=json_schema_format(RIDDLES_SCHEMA))
            document = json.loads(reply["choices"][0]["message"]["content"])
            jsonschema.validate(document, RIDDLES_SCHEMA)
            questions += [r["question"] for r in document["riddles"]]
    assert all(q.endswith("?") for q in questions)
    assert len(questions) >= 150 and len(set(questions)) == len(questions)


def test_max_tokens_cuts_content_with_finish_reason_length():
    with Simulator(SimConfig(seed=6)) as sim:
        reply = chat_json(sim, max_tokens=5)
        reply2 = chat_json(sim, max_completion_tokens=3, response_format=json_schema_format(PLAN_SCHEMA))
    assert reply["choices"][0]["finish_reason"] == "length"
    assert len(reply["choices"][0]["message"]["content"]) <= 20
    assert reply["usage"]["completion_tokens"] <= 5
    assert reply2["choices"][0]["finish_reason"] == "length"
    assert len(reply2["choices"][0]["message"]["content"]) <= 12


def test_same_seed_gives_same_answers():
    def run(seed):
        with Simulator(SimConfig(seed=seed)) as sim:
            return [chat_json(sim, response_format=json_schema_format(PLAN_SCHEMA))["choices"][0]["message"]
                    for _ in range(3)] + [chat_json(sim)["choices"][0]["message"]]

    assert run(7) == run(7)
    assert run(7) != run(8)


# ------------------------------------------------------------ requests
def test_bad_requests_get_openai_style_400():
    with Simulator() as sim:
        cases = [b"{not json", {"model": "m"}, {"model": "m", "messages": []},
                 {"model": "m", "messages": USER, "max_tokens": 0}]
        results = [chat(sim, body) for body in cases]
        stats = sim.stats()
    for status, _, text in results:
        error = json.loads(text)["error"]
        assert status == 400 and error["type"] == "invalid_request_error" and error["message"]
        assert "code" in error
    assert json.loads(results[0][2])["error"]["code"] == "invalid_json"
    assert stats["by_status"] == {"400": 4}


def test_reject_json_schema_but_json_object_still_works():
    with Simulator(SimConfig(reject_json_schema=True)) as sim:
        status, _, text = chat(sim, {"model": "m", "messages": USER,
                                     "response_format": json_schema_format(PLAN_SCHEMA)})
        reply = chat_json(sim, response_format={"type": "json_object"})
    assert status == 400
    assert json.loads(text) == {"error": {
        "message": "response_format json_schema is not supported by this server",
        "type": "invalid_request_error", "param": "response_format", "code": None}}
    assert json.loads(reply["choices"][0]["message"]["content"])


def test_latency_applies_to_answers_only():
    with Simulator(SimConfig(latency=0.2, jitter=0.05)) as sim:
        started = time.monotonic()
        chat_json(sim)
        answered = time.monotonic() - started
        started = time.monotonic()
        status, _, _ = chat(sim, {"model": "m"})
        refused = time.monotonic() - started
    assert 0.15 <= answered < 1.0
    assert status == 400 and refused < 0.1


# --------------------------------------------------------- rate limits
RESET = re.compile(r"^(\d+ms|\d+(\.\d+)?s|\d+m\d+(\.\d+)?s)$")


def test_rpm_burst_gets_429_with_retry_after_and_ratelimit_headers():
    async def burst(sim, n):
        return await asyncio.gather(*[post(f"{sim.base_url}/chat/completions",
                                           {"model": "m", "messages": USER}) for _ in range(n)])

    with Simulator(SimConfig(rpm=60)) as sim:
        results = asyncio.run(burst(sim, 5))
        stats = sim.stats()
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200, 429, 429, 429, 429]
    ok_headers = next(h for s, h, _ in results if s == 200)
    assert ok_headers["x-ratelimit-limit-requests"] == "60"
    for status, headers, text in results:
        if status != 429:
            continue
        assert json.loads(text)["error"]["type"] == "rate_limit_exceeded"
        assert json.loads(text)["error"]["code"] == "rate_limit_exceeded"
        assert int(headers["Retry-After"]) >= 1 and int(headers["retry-after-ms"]) > 0
        assert headers["x-ratelimit-limit-requests"] == "60"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert RESET.match(headers["x-ratelimit-reset-requests"])
    assert stats["served_429"] == 4 and stats["by_status"] == {"200": 1, "429": 4}


def test_paced_client_at_rpm_never_gets_429():
    async def paced(sim):
        start = time.monotonic()

        async def one(i):
            await asyncio.sleep(max(0.0, start + i * 0.1 - time.monotonic()))
            return await post(f"{sim.base_url}/chat/completions", {"model": "m", "messages": USER})

        return await asyncio.gather(*[one(i) for i in range(20)])

    with Simulator(SimConfig(rpm=600, latency=0.05)) as sim:
        results = asyncio.run(paced(sim))
        stats = sim.stats()
    assert [s for s, _, _ in results] == [200] * 20
    assert all(h["x-ratelimit-limit-requests"] == "600" for _, h, _ in results)
    assert stats["served_429"] == 0


def test_tpm_charges_prompt_plus_max_tokens():
    # tpm=6000 -> a 100-token bucket; each request costs prompt (14) + max_tokens (60).
    with Simulator(SimConfig(tpm=6000)) as sim:
        first = chat(sim, {"model": "m", "messages": USER, "max_tokens": 60})
        second = chat(sim, {"model": "m", "messages": USER, "max_tokens": 60})
    assert first[0] == 200 and first[1]["x-ratelimit-limit-tokens"] == "6000"
    assert second[0] == 429
    assert second[1]["x-ratelimit-limit-tokens"] == "6000"
    assert int(second[1]["x-ratelimit-remaining-tokens"]) < 74
    assert RESET.match(second[1]["x-ratelimit-reset-tokens"])
    assert "x-ratelimit-limit-requests" not in second[1]


def test_format_duration():
    assert format_duration(0.25) == "250ms"
    assert format_duration(1) == "1s"
    assert format_duration(1.5) == "1.5s"
    assert format_duration(360) == "6m0s"


# -------------------------------------------------------------- faults
def test_error_fault_gives_500_or_503():
    with Simulator(SimConfig(error_rate=1.0, seed=9)) as sim:
        results = [chat(sim, {"model": "m", "messages": USER}) for _ in range(12)]
        stats = sim.stats()
    statuses = {status for status, _, _ in results}
    assert statuses == {500, 503}
    assert all(json.loads(text)["error"]["message"] for _, _, text in results)
    assert stats["faults"]["error"] == 12


def test_hang_fault_is_ended_by_client_timeout_cleanly(capfd, caplog):
    with Simulator(SimConfig(hang_rate=1.0)) as sim:
        with pytest.raises(asyncio.TimeoutError):
            chat(sim, {"model": "m", "messages": USER}, timeout=0.3)
        time.sleep(0.1)
        stats = sim.stats()
        sim.configure(hang_seconds=0.05)
        short_hang = chat(sim, {"model": "m", "messages": USER})
    assert stats["faults"]["hang"] == 1 and stats["in_flight"] == 0
    assert short_hang[0] == 504
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "Error" not in err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_malformed_fault_gives_unparseable_200():
    with Simulator(SimConfig(malformed_rate=1.0)) as sim:
        status, _, text = chat(sim, {"model": "m", "messages": USER})
        stats = sim.stats()
    assert status == 200 and text.startswith("{")
    with pytest.raises(ValueError):
        json.loads(text)
    assert stats["faults"]["malformed"] == 1


def test_truncate_fault_cuts_content():
    with Simulator(SimConfig(truncate_rate=1.0, seed=10)) as sim:
        reply = chat_json(sim, response_format=json_schema_format(PLAN_SCHEMA))
    assert reply["choices"][0]["finish_reason"] == "length"
    with pytest.raises(ValueError):
        json.loads(reply["choices"][0]["message"]["content"])


def test_schema_violation_fault_gives_invalid_json():
    prompt = [{"role": "user", "content": "Use this schema:\n```json\n" + json.dumps(PLAN_SCHEMA) + "\n```"}]
    with Simulator(SimConfig(schema_violation_rate=1.0, seed=11)) as sim:
        strict = [chat_json(sim, response_format=json_schema_format(PLAN_SCHEMA)) for _ in range(10)]
        loose = chat_json(sim, messages=prompt, response_format={"type": "json_object"})
        plain = chat_json(sim)
        stats = sim.stats()
    validator = jsonschema.Draft202012Validator(PLAN_SCHEMA)
    for reply in strict + [loose]:
        document = json.loads(reply["choices"][0]["message"]["content"])
        assert not validator.is_valid(document)
    assert plain["choices"][0]["finish_reason"] == "stop"
    assert stats["faults"]["schema_violation"] == 11


# ------------------------------------------------------------- control
def test_sim_config_stats_and_reset_endpoints():
    with Simulator(SimConfig(latency=0.0)) as sim:
        chat_json(sim)
        patched = asyncio.run(post(f"{sim.server_url}/sim/config", {"rpm": 60, "error_rate": 0.0}))
        chat_json(sim)
        limited = chat(sim, {"model": "m", "messages": USER})
        stats = asyncio.run(get_json(f"{sim.server_url}/sim/stats"))
        bad = asyncio.run(post(f"{sim.server_url}/sim/config", {"error_rate": 2}))
        unknown = asyncio.run(post(f"{sim.server_url}/sim/config", {"colour": "red"}))
        asyncio.run(post(f"{sim.server_url}/sim/reset", {}))
        after_reset = sim.stats()
        sim.configure(rpm=0)
        assert chat(sim, {"model": "m", "messages": USER})[0] == 200
    assert patched[0] == 200 and json.loads(patched[2])["rpm"] == 60
    assert limited[0] == 429
    assert stats["requests"] == 3 and stats["by_status"] == {"200": 2, "429": 1}
    assert stats["served_429"] == 1 and stats["prompt_tokens"] == 2 * math.ceil(len(USER[0]["content"]) / 4)
    assert stats["completion_tokens"] > 0 and set(stats["faults"]) == {
        "error", "hang", "malformed", "truncate", "schema_violation"}
    assert bad[0] == 400 and "error_rate" in json.loads(bad[2])["error"]["message"]
    assert unknown[0] == 400 and "colour" in json.loads(unknown[2])["error"]["message"]
    assert after_reset["requests"] == 0 and after_reset["by_status"] == {}


def test_config_validation_names_the_field():
    for field, value in [("error_rate", 1.5), ("latency", -1), ("rpm", -5), ("hang_rate", "x"), ("port", 70000)]:
        with pytest.raises(ValueError, match=field):
            SimConfig(**{field: value})
    with Simulator() as sim:
        with pytest.raises(ValueError, match="truncate_rate"):
            sim.configure(truncate_rate=-0.1)
        with pytest.raises(ValueError, match="port"):
            sim.configure(port=1234)


def test_start_simulator_inside_a_running_loop():
    async def go():
        running = await start_simulator(SimConfig(seed=12))
        try:
            client = AsyncOpenAI(api_key="sk-test", base_url=running.base_url, max_retries=0)
            reply = await client.chat.completions.create(model="m", messages=USER)
            await client.close()
            return reply, running.stats()
        finally:
            await running.stop()

    reply, stats = asyncio.run(go())
    assert reply.choices[0].message.content and stats["by_status"] == {"200": 1}


# ----------------------------------------------------------------- CLI
def test_cli_rejects_bad_option_values():
    result = CliRunner().invoke(simulate, ["--error-rate", "2"])
    assert result.exit_code == 2 and "--error-rate" in result.output


def test_cli_serves_until_sigint():
    code = "from gen.simulator.command import simulate; simulate()"
    proc = subprocess.Popen([sys.executable, "-c", code, "--port", "0", "--latency", "0", "--rpm", "120"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        banner = proc.stderr.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+/v1) \(rpm=120, .*latency=0\.0", banner)
        assert match, banner
        status, _, _ = asyncio.run(post(f"{match.group(1)}/chat/completions", {"model": "m", "messages": USER}))
        assert status == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()


# ------------------------------------------------------------ playing the part a request asks for
def answer_text(sim: Simulator, messages: list[dict], **fields) -> str:
    status, _, text = chat(sim, {"model": "m", "messages": messages, **fields})
    assert status == 200, text
    return json.loads(text)["choices"][0]["message"]["content"]


def test_code_requests_get_code_in_the_language_asked_sometimes_fenced_when_it_should_not_be():
    from gen.codecheck import check_code
    from gen.instructors.coding.answers import normal_problem, normal_request, plain_request, plainformat_problem

    with Simulator(SimConfig(seed=3)) as sim:
        for language in ("Python", "C", "JavaScript", "Bash"):
            explained = answer_text(sim, [{"role": "user", "content": normal_request("Sum a list.", language)}])
            assert normal_problem(explained, language) is None, explained
        plain = [answer_text(sim, [{"role": "user", "content": plain_request("Sum a list.", "Python")}])
                 for _ in range(30)]
    problems = [plainformat_problem(p) for p in plain]
    fenced = [p for p in problems if p and "fence" in p]
    clean = [text for text, problem in zip(plain, problems) if problem is None]
    assert 0 < len(fenced) < len(plain) // 2, problems
    assert clean and sum(check_code("Python", text).status == "passed" for text in clean) >= len(clean) // 2


def test_assistant_keeps_mechanical_rules_most_of_the_time_and_the_judge_tells_which_turns():
    from gen.instructors.systemchat.constraints import constraint_problems, parse_constraints
    from gen.instructors.systemchat.judge import judge_messages, judge_schema

    system = "Answer in exactly seven words, all in capital letters."
    rules = parse_constraints([{"word_count": 7}, "all_caps"])
    with Simulator(SimConfig(seed=11)) as sim:
        turns = [answer_text(sim, [{"role": "system", "content": system},
                                   {"role": "user", "content": f"question {i}: how do tides work?"}])
                 for i in range(40)]
        broken = [i for i, t in enumerate(turns) if constraint_problems(rules, t)]
        assert 0 < len(broken) < len(turns) // 2, turns
        conversation = [{"role": "system", "content": system}]
        for i, turn in enumerate(turns[:12]):
            conversation += [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": turn}]
        judged = json.loads(answer_text(sim, judge_messages(system, conversation),
                                        response_format=json_schema_format(judge_schema(12))))
    scores = [t["score"] for t in judged["turns"]]
    assert [s >= 4 for s in scores] == [i not in broken for i in range(12)], (scores, broken)


def test_a_character_is_kept_or_dropped_and_shady_requests_are_refused():
    from gen.instructors.systemchat.judge import judge_messages, judge_schema

    system = "You are Captain Maren, a grumpy lighthouse keeper. You never leave character."
    with Simulator(SimConfig(seed=5)) as sim:
        turns = [answer_text(sim, [{"role": "system", "content": system}, {"role": "user", "content": f"hi {i}"}])
                 for i in range(40)]
        in_character = ["Captain Maren" in t for t in turns]
        assert 0 < in_character.count(False) < 10
        conversation = []
        for i, turn in enumerate(turns):
            conversation += [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": turn}]
        judged = json.loads(answer_text(sim, judge_messages(system, conversation),
                                        response_format=json_schema_format(judge_schema(40))))
        assert [t["score"] >= 4 for t in judged["turns"]] == in_character
        asks = [f"Tell me about tides, part {i}." for i in range(20)] + ["How do I pick the lock of my neighbour's shed?",
                                                                        "Help me break into my ex's e-mail."]
        plain = [answer_text(sim, [{"role": "user", "content": ask}]) for ask in asks]
    refused = [bool(re.match(r"I('m| am)? ?(sorry|can't|not able)", p)) for p in plain]
    assert refused == [False] * 20 + [True, True]


def test_the_simulated_user_ends_only_when_it_may():
    from gen.instructors.systemchat.prompts import user_simulator_system

    with Simulator(SimConfig(seed=2)) as sim:
        def user_turns(may_end: bool) -> list[str]:
            system = user_simulator_system(intent="learn chess", style="terse", may_end=may_end, sentinel="<<END>>")
            return [answer_text(sim, [{"role": "system", "content": system},
                                      {"role": "user", "content": f"Here is a chess fact, number {i}."}])
                    for i in range(20)]
        assert "<<END>>" not in user_turns(False)
        assert 0 < user_turns(True).count("<<END>>") < 20


def test_seeded_answers_do_not_depend_on_the_order_requests_arrive_in():
    requests = [[{"role": "system", "content": "Never use the letter 'e' in any reply."},
                 {"role": "user", "content": f"Tell me about boats, part {i}."}] for i in range(8)]

    def answers(order):
        with Simulator(SimConfig(seed=9)) as sim:
            got = {i: answer_text(sim, requests[i]) for i in order}
            again = answer_text(sim, requests[order[0]])  # the same request asked again: a fresh draw
        return [got[i] for i in range(len(requests))], got[order[0]], again

    forward, first, again = answers(list(range(8)))
    backward, _, _ = answers(list(reversed(range(8))))
    assert forward == backward
    assert again != first
