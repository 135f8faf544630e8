"""The simulated teacher: an aiohttp app speaking OpenAI chat-completions.

Request flow of ``POST /v1/chat/completions``: parse and validate (400) ->
reject json_schema if configured (400) -> rate limits (429) -> injected
faults (500/503, hang, malformed body) -> latency -> answer.  400s and 429s
answer immediately.  What the answer says: the part the request asks the
simulator to play (roles.py: code, a judge, a simulated user, an assistant
keeping a system prompt), else content.py's generic text or schema instance.

TPM charging rule: a request is charged prompt_tokens + max_tokens (or
max_completion_tokens) when the client sets one, else prompt_tokens +
DEFAULT_COMPLETION_ESTIMATE.  The charge is made at admission and never
refunded, as providers do when they count max_tokens against TPM.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import hashlib
import json
import math
import random
import time
from typing import Any

from aiohttp import web

from .batch import BatchBackend, new_batch_stats
from .buckets import RateLimiter, retry_headers
from .config import STARTUP_ONLY_FIELDS, SimConfig
from .content import (
    find_schema_in_messages,
    generate_instance,
    generate_invalid_instance,
    message_text,
)
from .roles import structured_answer, text_answer

DEFAULT_COMPLETION_ESTIMATE = 256
SHUTDOWN_TIMEOUT_S = 0.25
FAULT_KINDS = ("error", "hang", "malformed", "truncate", "schema_violation")
JSON_HEADERS = {"Content-Type": "application/json"}
ARRIVALS_KEPT = 200_000  # the last chat requests' arrival times, for GET /sim/arrivals


def count_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def new_stats() -> dict[str, Any]:
    return {
        "requests": 0,
        "by_status": {},
        "served_429": 0,
        "faults": {kind: 0 for kind in FAULT_KINDS},
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "in_flight": 0,
        "peak_in_flight": 0,  # the most requests answered at once (how many calls a client really had in flight)
        "in_flight_at_arrival": {},  # how many were already being answered as each request arrived: a histogram
        "batch": new_batch_stats(),
    }


class SimulatorState:
    """Live config, RNG, rate limiter and counters of one running simulator."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.limiter = RateLimiter(config.rpm, config.tpm, time.monotonic())
        self.stats = new_stats()
        # (unix time, admitted) of each chat request as it reached the rate limits: the ground truth of pacing
        self.arrivals: collections.deque[tuple[float, bool]] = collections.deque(maxlen=ARRIVALS_KEPT)
        self.answer_count = 0
        self.script: list[dict[str, Any]] = []
        self.salt = config.seed if config.seed is not None else self.rng.getrandbits(64)
        self.asked: dict[str, int] = {}

    def request_rng(self, messages: list) -> random.Random:
        """Randomness for one answer, from the seed, the request's messages and how often they were asked:
        answers do not depend on the order concurrent requests arrive in, and a request asked again (a retry)
        gets a fresh draw."""
        digest = hashlib.sha256(json.dumps(messages, sort_keys=True, default=str).encode()).hexdigest()
        if len(self.asked) >= 100_000:
            self.asked.clear()
        occurrence = self.asked[digest] = self.asked.get(digest, 0) + 1
        return random.Random(f"{self.salt}:{digest}:{occurrence}")

    def set_script(self, rules: Any) -> None:
        """Scripted answers for tests: each rule {"match": text, "answers": [str, ...]} answers a request whose
        messages contain `match` with its answers in turn (the last one repeats). First matching rule wins."""
        if not isinstance(rules, list):
            raise ValueError("script must be a list of rules")
        parsed = []
        for i, rule in enumerate(rules):
            if not isinstance(rule, dict) or not isinstance(rule.get("match"), str):
                raise ValueError(f"script rule {i}: needs a string 'match'")
            answers = rule.get("answers")
            if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
                raise ValueError(f"script rule {i}: needs a non-empty list of string 'answers'")
            parsed.append({"match": rule["match"], "answers": list(answers), "served": 0})
        self.script = parsed

    def scripted(self, messages: list) -> str | None:
        if not self.script:
            return None
        text = "\n".join(message_text(m.get("content")) for m in messages if isinstance(m, dict))
        for rule in self.script:
            if rule["match"] in text:
                answer = rule["answers"][min(rule["served"], len(rule["answers"]) - 1)]
                rule["served"] += 1
                return answer
        return None

    def configure(self, patch: dict[str, Any]) -> SimConfig:
        for name in STARTUP_ONLY_FIELDS:
            if name in patch and patch[name] != getattr(self.config, name):
                raise ValueError(f"{name} cannot be changed while the simulator runs")
        new = self.config.with_changes(patch)
        if new.seed != self.config.seed or "seed" in patch:
            self.rng = random.Random(new.seed)
            self.salt = new.seed if new.seed is not None else self.rng.getrandbits(64)
            self.asked.clear()
        if (new.rpm, new.tpm) != (self.config.rpm, self.config.tpm):
            self.limiter = RateLimiter(new.rpm, new.tpm, time.monotonic())
        self.config = new
        return new

    def reset_stats(self) -> None:
        in_flight = self.stats["in_flight"]
        self.stats = new_stats()
        self.stats["in_flight"] = in_flight
        self.arrivals.clear()

    def respond(self, status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
        by_status = self.stats["by_status"]
        by_status[str(status)] = by_status.get(str(status), 0) + 1
        text = body if isinstance(body, str) else json.dumps(body)
        return web.Response(status=status, text=text, headers={**JSON_HEADERS, **(headers or {})})


def _parse_request(raw: bytes) -> tuple[dict | None, dict | None]:
    """(body, None) for a usable request, (None, error body) for a bad one."""
    try:
        body = json.loads(raw)
    except ValueError:
        return None, error_body("We could not parse the JSON body of your request.",
                                      "invalid_request_error", "invalid_json")
    if not isinstance(body, dict):
        return None, error_body("The request body must be a JSON object.",
                                      "invalid_request_error", "invalid_json")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return None, error_body("'messages' is required and must be a non-empty array of objects.",
                                      "invalid_request_error", "missing_messages", "messages")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                   or max_tokens < 1):
        return None, error_body("max_tokens must be a positive integer.",
                                      "invalid_request_error", "invalid_value", "max_tokens")
    return body, None


def _requested_schema(body: dict) -> tuple[str, Any]:
    """("json_schema" | "json_object" | "text", schema or None)."""
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        return "json_schema", spec.get("schema") if isinstance(spec, dict) else None
    if kind == "json_object":
        return "json_object", find_schema_in_messages(body["messages"])
    return "text", None


def key_echo_body(authorization: str) -> dict:
    """An error body quoting the caller's key whole (as some proxies do) and masked (as OpenAI does)."""
    token = authorization.split(" ", 1)[1] if " " in authorization else authorization
    masked = f"{token[:3]}***{token[-4:]}"
    long_masked = f"{token[:8]}{'*' * 20}{token[-4:]}"
    body = error_body(f"Incorrect API key provided: {masked} ({long_masked}); the proxy saw "
                      f"'Authorization: Bearer {token}'", "invalid_request_error", "invalid_api_key")
    body["echo"] = {"authorization": authorization, "masked": [masked, long_masked]}
    return body


STATE_KEY = web.AppKey("state", SimulatorState)


class ChatHandler:
    """The chat-completions endpoint, bound to one SimulatorState."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    async def handle(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        state.stats["requests"] += 1
        if state.config.echo_key_status and state.rng.random() < state.config.echo_key_rate:
            return state.respond(state.config.echo_key_status, key_echo_body(request.headers.get("Authorization", "")))
        body, error = _parse_request(await request.read())
        if error is not None:
            return state.respond(400, error)
        config = state.config
        mode, schema = _requested_schema(body)
        if mode == "json_schema" and config.reject_json_schema:
            return state.respond(400, error_body(
                "response_format json_schema is not supported by this server",
                "invalid_request_error", None, "response_format"))
        prompt_tokens = sum(count_tokens(message_text(m.get("content"))) for m in body["messages"])
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        charge = prompt_tokens + (max_tokens or DEFAULT_COMPLETION_ESTIMATE)
        decision = state.limiter.check(charge, time.monotonic())
        state.arrivals.append((time.time(), decision.allowed))
        if not decision.allowed:
            state.stats["served_429"] += 1
            headers = {**decision.headers, **retry_headers(decision.retry_after_s)}
            return state.respond(429, error_body(
                "Rate limit reached for requests; please retry after the indicated delay.",
                "rate_limit_exceeded", "rate_limit_exceeded"), headers)
        arrivals = state.stats["in_flight_at_arrival"]
        arrivals[state.stats["in_flight"]] = arrivals.get(state.stats["in_flight"], 0) + 1
        state.stats["in_flight"] += 1
        state.stats["peak_in_flight"] = max(state.stats["peak_in_flight"], state.stats["in_flight"])
        try:
            return await self._answer(body, mode, schema, prompt_tokens, max_tokens, decision.headers)
        finally:
            state.stats["in_flight"] -= 1

    async def _answer(self, body: dict, mode: str, schema: Any, prompt_tokens: int,
                      max_tokens: int | None, headers: dict[str, str]) -> web.Response:
        state, config, rng = self.state, self.state.config, self.state.rng
        faults = state.stats["faults"]
        draws = [rng.random() for _ in FAULT_KINDS]
        if draws[0] < config.error_rate:
            faults["error"] += 1
            await self._sleep(config)
            if rng.random() < 0.5:
                return state.respond(500, error_body(
                    "The server had an error while processing your request.", "server_error"), headers)
            return state.respond(503, error_body(
                "The engine is currently overloaded, please try again later.", "server_error",
                "service_unavailable"), headers)
        if draws[1] < config.hang_rate:
            faults["hang"] += 1
            await asyncio.sleep(config.hang_seconds)
            return state.respond(504, error_body("The simulated teacher hung and timed out.",
                                                 "server_error", "timeout"), headers)

        violate = schema is not None and draws[4] < config.schema_violation_rate
        content = self._content(body, mode, schema, violate)
        finish_reason = "stop"
        if draws[3] < config.truncate_rate:
            faults["truncate"] += 1
            content = content[: max(1, int(len(content) * rng.uniform(0.3, 0.7)))]
            finish_reason = "length"
        if max_tokens is not None and count_tokens(content) > max_tokens:
            content, finish_reason = content[: max_tokens * 4], "length"
        if violate:
            faults["schema_violation"] += 1
        completion_tokens = count_tokens(content)
        state.answer_count += 1
        payload = {
            "id": f"chatcmpl-sim-{state.answer_count:08d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") if isinstance(body.get("model"), str) else config.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }
        await self._sleep(config)
        text = json.dumps(payload)
        if draws[2] < config.malformed_rate:
            faults["malformed"] += 1
            return state.respond(200, text[: max(1, len(text) // 2)], headers)
        state.stats["prompt_tokens"] += prompt_tokens
        state.stats["completion_tokens"] += completion_tokens
        return state.respond(200, text, headers)

    def batch_answer(self, body: Any) -> tuple[int, dict]:
        """One request of a batch: (status, response body), from the same content engine as online answers."""
        body, error = _parse_request(json.dumps(body).encode())
        if error is not None:
            return 400, error
        mode, schema = _requested_schema(body)
        prompt_tokens = sum(count_tokens(message_text(m.get("content"))) for m in body["messages"])
        content = self._content(body, mode, schema, False)
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        finish_reason = "stop"
        if max_tokens is not None and count_tokens(content) > max_tokens:
            content, finish_reason = content[: max_tokens * 4], "length"
        completion_tokens = count_tokens(content)
        self.state.answer_count += 1
        self.state.stats["prompt_tokens"] += prompt_tokens
        self.state.stats["completion_tokens"] += completion_tokens
        return 200, {
            "id": f"chatcmpl-sim-{self.state.answer_count:08d}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model") or self.state.config.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}

    def _content(self, body: dict, mode: str, schema: Any, violate: bool) -> str:
        scripted = self.state.scripted(body["messages"])
        if scripted is not None:
            return scripted
        rng = self.state.rng
        played = self.state.request_rng(body["messages"])  # the same request gets the same answer, in any order
        if schema is not None:
            special = None if violate else structured_answer(body["messages"], schema, played)
            if special is not None:
                return json.dumps(special)
            value = generate_invalid_instance(schema, rng) if violate else generate_instance(schema, rng)
            return json.dumps(value)
        text = text_answer(body["messages"], played)
        return json.dumps({"result": text}) if mode != "text" else text

    async def _sleep(self, config: SimConfig) -> None:
        delay = config.latency
        if config.jitter:
            delay += self.state.rng.uniform(-config.jitter, config.jitter)
        if delay > 0:
            await asyncio.sleep(delay)


def build_app(config: SimConfig) -> web.Application:
    """The simulator as an aiohttp Application; its live state is ``app[STATE_KEY]``."""
    state = SimulatorState(config)
    app = web.Application()
    app[STATE_KEY] = state
    chat = ChatHandler(state)

    async def models(_request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": state.config.model, "object": "model", "created": 0, "owned_by": "gen-simulator"}]})

    async def get_stats(_request: web.Request) -> web.Response:
        return web.json_response(copy.deepcopy(state.stats))

    async def get_arrivals(_request: web.Request) -> web.Response:
        return web.json_response({"clock": "unix", "arrivals": [[t, ok] for t, ok in state.arrivals]})

    async def get_config(_request: web.Request) -> web.Response:
        return web.json_response(state.config.to_dict())

    async def patch_config(request: web.Request) -> web.Response:
        try:
            patch = json.loads(await request.read())
            if not isinstance(patch, dict):
                raise ValueError("config patch must be a JSON object")
            new = state.configure(patch)
        except (ValueError, TypeError) as exc:
            return web.json_response(error_body(str(exc), "invalid_request_error"), status=400)
        return web.json_response(new.to_dict())

    async def set_script(request: web.Request) -> web.Response:
        try:
            state.set_script(json.loads(await request.read()))
        except (ValueError, TypeError) as exc:
            return web.json_response(error_body(str(exc), "invalid_request_error"), status=400)
        return web.json_response({"ok": True, "rules": len(state.script)})

    async def reset(_request: web.Request) -> web.Response:
        state.reset_stats()
        return web.json_response({"ok": True})

    app.router.add_post("/v1/chat/completions", chat.handle)
    app.router.add_post("/chat/completions", chat.handle)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/models", models)
    app.router.add_get("/sim/stats", get_stats)
    app.router.add_get("/sim/arrivals", get_arrivals)
    app.router.add_get("/sim/config", get_config)
    app.router.add_post("/sim/config", patch_config)
    app.router.add_post("/sim/reset", reset)
    app.router.add_post("/sim/script", set_script)
    BatchBackend(state, chat.batch_answer).add_routes(app)
    return app
