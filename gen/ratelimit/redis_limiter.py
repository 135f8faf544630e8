"""The fleet-wide limiter: the same GCRA pacing as `LocalRateLimiter`, with its clocks in Redis.

One Lua script reserves a start time for a call against both limits at once (requests and tokens), atomically,
on Redis's own clock, so every worker process on every host draws from the same budget and calls are spread
evenly instead of bursting. A 429 anywhere pauses the teacher everywhere for its Retry-After.
The adaptive pace (`gen.ratelimit.pace`: announced limits and AIMD on 429s) lives in Redis too, so what one
worker learns slows the whole fleet; callers sleeping on a plan made before the pace was lowered plan again.
Concurrency (calls in flight) stays a per-process cap.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging

from redis.exceptions import RedisError

from gen.errors import TeacherError
from gen.ratelimit import pace
from gen.ratelimit.base import Permit, RateLimiter

log = logging.getLogger("gen.ratelimit")
REDIS_WAIT_LIMIT = 120.0  # seconds a call waits for an unreachable Redis before its attempt fails

# Shared by the scripts below: the adaptive pace kept in a hash (the rules of gen.ratelimit.pace, in Lua).
# Fields per dimension d ('r' requests, 't' tokens): d_cap (HEADROOM x announced limit, or the announced limit
# itself when it is at or above the stated one), d_base and d_since
# (the rate after the last decrease, and when); last_dec (when the last decrease happened); epoch (bumped
# whenever the pace was lowered, so that callers sleeping on a slot of the older, faster plan plan again).
PACE_LIB = """
local function now_()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end
local function load(key)
  local flat = redis.call('HGETALL', key)
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = tonumber(flat[i + 1]) end
  return h
end
local function ceiling(h, d, stated)
  local cap = h[d .. '_cap']
  if stated > 0 and (cap == nil or stated < cap) then return stated end
  return cap
end
local function rate(h, d, stated, now, recovery)
  local c = ceiling(h, d, stated)
  local base = h[d .. '_base']
  if base == nil then return c end
  if c == nil then return base end
  local since = h[d .. '_since'] or now
  local elapsed = now - since
  if elapsed < 0 then elapsed = 0 end
  local r = base + c / recovery * elapsed
  if r > c then return c end
  return r
end
local function fmt(x) return string.format('%.6f', x) end
"""

# KEYS: request clock, token clock, pause-until, pace. ARGV: stated rpm, stated tpm (0: none), tokens, ttl,
# recovery seconds. Returns {seconds to wait, start (Redis time), epoch} as strings (Lua numbers lose precision
# through RESP). Slots are planned from the previous slot, on Redis's clock: no drift, whoever wakes late.
RESERVE = PACE_LIB + """
local now = now_()
local h = load(KEYS[4])
local recovery = tonumber(ARGV[5])
local r = rate(h, 'r', tonumber(ARGV[1]), now, recovery)
local tr = rate(h, 't', tonumber(ARGV[2]), now, recovery)
local interval, per_token = 0, 0
if r and r > 0 then interval = 60 / r end
if tr and tr > 0 then per_token = 60 / tr end
local tokens = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local start = now
local req = tonumber(redis.call('GET', KEYS[1]) or '0')
local tok = tonumber(redis.call('GET', KEYS[2]) or '0')
local pause = tonumber(redis.call('GET', KEYS[3]) or '0')
if req > start then start = req end
if tok > start then start = tok end
if pause > start then start = pause end
if interval > 0 then redis.call('SET', KEYS[1], fmt(start + interval), 'EX', ttl) end
if per_token > 0 then redis.call('SET', KEYS[2], fmt(start + tokens * per_token), 'EX', ttl) end
return {fmt(start - now), fmt(start), tostring(h['epoch'] or 0)}
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

# KEYS: pause-until. ARGV: seconds, ttl. Only ever extends a pause.
PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local until_ = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ > current then redis.call('SET', KEYS[1], string.format('%.6f', until_), 'EX', tonumber(ARGV[2])) end
return 1
"""

# KEYS: request clock, pace. ARGV: mode ('announce' | 'refused'), stated rpm, stated tpm, announced rpm,
# announced tpm (0: none), granted-at of the refused call, ttl, recovery, headroom, decrease, decrease-known,
# min rpm, min tpm. Returns the requests per minute now (0: no limit), as a string.
ADAPT = PACE_LIB + """
local mode = ARGV[1]
local stated = {r = tonumber(ARGV[2]), t = tonumber(ARGV[3])}
local announced = {r = tonumber(ARGV[4]), t = tonumber(ARGV[5])}
local granted = tonumber(ARGV[6])
local ttl, recovery, headroom = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local dec, dec_known = tonumber(ARGV[10]), tonumber(ARGV[11])
local floor = {r = tonumber(ARGV[12]), t = tonumber(ARGV[13])}
local now = now_()
local h = load(KEYS[2])
local lowered = false
for _, d in ipairs({'r', 't'}) do
  local limit = announced[d]
  if limit > 0 then
    local cap = tonumber(fmt(limit * headroom))
    if stated[d] > 0 and limit >= stated[d] then cap = limit end  -- it confirms the stated pace: no headroom
    if h[d .. '_cap'] ~= cap then
      local before = rate(h, d, stated[d], now, recovery)
      h[d .. '_cap'] = cap
      redis.call('HSET', KEYS[2], d .. '_cap', fmt(cap))
      local after = ceiling(h, d, stated[d])
      if before and after and after > before then
        h[d .. '_base'], h[d .. '_since'] = before, now
        redis.call('HSET', KEYS[2], d .. '_base', fmt(before), d .. '_since', fmt(now))
      end
      if after and (before == nil or after < before) then lowered = true end
    end
  end
end
if lowered then  -- calls sent before this were at the old pace: their 429s are not news
  h['last_dec'] = now
  redis.call('HSET', KEYS[2], 'last_dec', fmt(now))
end
if mode == 'refused' and granted >= (h['last_dec'] or 0) then
  local any = false
  for _, d in ipairs({'r', 't'}) do
    local current = rate(h, d, stated[d], now, recovery)
    if current then
      local factor = dec
      local cap = h[d .. '_cap']
      if cap and current <= cap * 1.0001 then factor = dec_known end
      local base = current * factor
      if base < floor[d] then base = floor[d] end
      h[d .. '_base'], h[d .. '_since'] = base, now
      redis.call('HSET', KEYS[2], d .. '_base', fmt(base), d .. '_since', fmt(now))
      any = true
    end
  end
  if any then
    redis.call('HSET', KEYS[2], 'last_dec', fmt(now))
    lowered = true
  end
end
local r = rate(h, 'r', stated.r, now, recovery)
if lowered then
  redis.call('HINCRBY', KEYS[2], 'epoch', 1)
  if r and r > 0 then redis.call('SET', KEYS[1], fmt(now + 60 / r), 'EX', ttl) end
end
redis.call('EXPIRE', KEYS[2], ttl)
return fmt(r or 0)
"""


def limiter_scope(provider: str, endpoint: str, model: str, key_env: str | None) -> str:
    """Limits belong to an account and a model at an endpoint: jobs sharing those share the budget."""
    return hashlib.sha256(f"{provider}|{endpoint}|{model}|{key_env}".encode()).hexdigest()[:16]


class RedisRateLimiter(RateLimiter):
    def __init__(self, redis, scope: str, *, rpm: float | None = None, tpm: float | None = None,
                 max_concurrency: int = 64, ttl: int = 3600, adaptive: bool = True):
        """`redis` is a `redis.asyncio.Redis` client owned by the caller's event loop."""
        self.redis = redis
        prefix = f"gen:rl:{scope}"
        self.keys = [f"{prefix}:req", f"{prefix}:tok", f"{prefix}:pause", f"{prefix}:pace"]
        self.rpm = float(rpm or 0)
        self.tpm = float(tpm or 0)
        self.adaptive = adaptive
        self.ttl = ttl
        self._slots = asyncio.Semaphore(max_concurrency)
        self._reserve = redis.register_script(RESERVE)
        self._adjust = redis.register_script(ADJUST)
        self._pause = redis.register_script(PAUSE)
        self._adapt = redis.register_script(ADAPT)

    async def acquire(self, estimated_tokens: int) -> Permit:
        await self._slots.acquire()
        try:
            while True:
                wait, start, epoch = await self._script(self._reserve, self.keys, [
                    self.rpm, self.tpm, estimated_tokens, self.ttl, pace.RECOVERY_SECONDS])
                if float(wait) <= 0:
                    break
                await asyncio.sleep(float(wait))
                # The pace was lowered while we slept (a 429 or a header, anywhere in the fleet): this slot was
                # planned on the old, faster pace, so plan again rather than go out in a burst.
                current = await self._script(self.redis.hget, None, [self.keys[3], "epoch"])
                if str(current or "0") == epoch:
                    break
        except BaseException:
            self._slots.release()
            raise
        return Permit(estimated_tokens=estimated_tokens, granted_at=float(start))

    async def release(self, permit: Permit, used_tokens: int | None) -> None:
        try:
            if self.tpm and used_tokens is not None and used_tokens != permit.estimated_tokens:
                delta = (used_tokens - permit.estimated_tokens) * 60.0 / self.tpm
                await self._script(self._adjust, [self.keys[1]], [delta, self.ttl])
        finally:
            self._slots.release()

    async def pause(self, seconds: float) -> None:
        await self._script(self._pause, [self.keys[2]], [seconds, self.ttl])

    async def announce(self, limit_requests: int | None, limit_tokens: int | None) -> None:
        if self.adaptive:
            await self._adapt_pace("announce", limit_requests, limit_tokens, 0.0)

    async def lower_pace(self, granted_at: float) -> None:
        if self.adaptive:
            await self._adapt_pace("refused", None, None, granted_at)

    async def current_rpm(self) -> float | None:
        rpm = float(await self._adapt_pace("announce", None, None, 0.0))
        return rpm or None

    async def _adapt_pace(self, mode: str, limit_requests, limit_tokens, granted_at: float):
        return await self._script(self._adapt, [self.keys[0], self.keys[3]], [
            mode, self.rpm, self.tpm, limit_requests or 0, limit_tokens or 0, granted_at, self.ttl,
            pace.RECOVERY_SECONDS, pace.HEADROOM, pace.DECREASE, pace.DECREASE_KNOWN, pace.MIN_RPM, pace.MIN_TPM])

    async def _script(self, script, keys: list[str] | None, args: list) -> object:
        """Run a limiter script; while Redis is unreachable, wait and try again rather than fail the unit."""
        delay, waited = 0.2, 0.0
        while True:
            try:
                result = await script(*args) if keys is None else await script(keys=keys, args=args)
                if isinstance(result, list):
                    return [r.decode() if isinstance(r, bytes) else r for r in result]
                return result.decode() if isinstance(result, bytes) else result
            except RedisError as exc:
                if waited >= REDIS_WAIT_LIMIT:
                    raise TeacherError(f"the fleet rate limiter (Redis) is unreachable: {type(exc).__name__}") from None
                log.warning("rate limiter: Redis error %s; trying again in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 5.0)
