"""The fleet-wide limiter: the same GCRA pacing as `LocalRateLimiter`, with its clocks in Redis.

One Lua script reserves a start time for a call against both limits at once (requests and tokens), atomically,
on Redis's own clock, so every worker process on every host draws from the same budget and calls are spread
evenly instead of bursting. A 429 anywhere pauses the teacher everywhere for its Retry-After.
Concurrency (calls in flight) stays a per-process cap.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging

from redis.exceptions import RedisError

from gen.errors import TeacherError
from gen.ratelimit.base import Permit, RateLimiter

log = logging.getLogger("gen.ratelimit")
REDIS_WAIT_LIMIT = 120.0  # seconds a call waits for an unreachable Redis before its attempt fails

# KEYS: request clock, token clock, pause-until. ARGV: seconds per request, seconds per token, tokens, ttl.
# Returns the seconds to wait before starting (as a string: Lua numbers lose precision through RESP).
RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local interval = tonumber(ARGV[1])
local per_token = tonumber(ARGV[2])
local tokens = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local start = now
local req = tonumber(redis.call('GET', KEYS[1]) or '0')
local tok = tonumber(redis.call('GET', KEYS[2]) or '0')
local pause = tonumber(redis.call('GET', KEYS[3]) or '0')
if req > start then start = req end
if tok > start then start = tok end
if pause > start then start = pause end
if interval > 0 then redis.call('SET', KEYS[1], string.format('%.6f', start + interval), 'EX', ttl) end
if per_token > 0 then redis.call('SET', KEYS[2], string.format('%.6f', start + tokens * per_token), 'EX', ttl) end
return string.format('%.6f', start - now)
"""

# KEYS: token clock. ARGV: seconds of token time to add (negative: a refund). Never moves the clock before now.
ADJUST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local tok = tonumber(redis.call('GET', KEYS[1]) or '0')
local value = tok + tonumber(ARGV[1])
if value < now then value = now end
redis.call('SET', KEYS[1], string.format('%.6f', value), 'EX', tonumber(ARGV[2]))
return 1
"""

# KEYS: pause-until. ARGV: seconds. Only ever extends a pause.
PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local until_ = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ > current then redis.call('SET', KEYS[1], string.format('%.6f', until_), 'EX', tonumber(ARGV[2])) end
return 1
"""


def limiter_scope(provider: str, endpoint: str, model: str, key_env: str | None) -> str:
    """Limits belong to an account and a model at an endpoint: jobs sharing those share the budget."""
    return hashlib.sha256(f"{provider}|{endpoint}|{model}|{key_env}".encode()).hexdigest()[:16]


class RedisRateLimiter(RateLimiter):
    def __init__(self, redis, scope: str, *, rpm: float | None = None, tpm: float | None = None,
                 max_concurrency: int = 64, ttl: int = 3600):
        """`redis` is a `redis.asyncio.Redis` client owned by the caller's event loop."""
        self.redis = redis
        self.keys = [f"gen:rl:{scope}:req", f"gen:rl:{scope}:tok", f"gen:rl:{scope}:pause"]
        self.request_interval = 60.0 / rpm if rpm else 0.0
        self.seconds_per_token = 60.0 / tpm if tpm else 0.0
        self.ttl = ttl
        self._slots = asyncio.Semaphore(max_concurrency)
        self._reserve = redis.register_script(RESERVE)
        self._adjust = redis.register_script(ADJUST)
        self._pause = redis.register_script(PAUSE)

    async def acquire(self, estimated_tokens: int) -> Permit:
        await self._slots.acquire()
        try:
            wait = float(await self._script(self._reserve, self.keys, [
                self.request_interval, self.seconds_per_token, estimated_tokens, self.ttl]))
            if wait > 0:
                await asyncio.sleep(wait)
        except BaseException:
            self._slots.release()
            raise
        return Permit(estimated_tokens=estimated_tokens, granted_at=0.0)

    async def release(self, permit: Permit, used_tokens: int | None) -> None:
        try:
            if self.seconds_per_token and used_tokens is not None and used_tokens != permit.estimated_tokens:
                delta = (used_tokens - permit.estimated_tokens) * self.seconds_per_token
                await self._script(self._adjust, [self.keys[1]], [delta, self.ttl])
        finally:
            self._slots.release()

    async def pause(self, seconds: float) -> None:
        await self._script(self._pause, [self.keys[2]], [seconds, self.ttl])

    async def _script(self, script, keys: list[str], args: list) -> object:
        """Run a limiter script; while Redis is unreachable, wait and try again rather than fail the unit."""
        delay, waited = 0.2, 0.0
        while True:
            try:
                return await script(keys=keys, args=args)
            except RedisError as exc:
                if waited >= REDIS_WAIT_LIMIT:
                    raise TeacherError(f"the fleet rate limiter (Redis) is unreachable: {type(exc).__name__}") from None
                log.warning("rate limiter: Redis error %s; trying again in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 5.0)
