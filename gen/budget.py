"""A job's budget_usd, held by reservation: every call reserves its estimated cost before it is sent.

`reserve(estimated_usd)` succeeds while spent + reserved + estimate stays within the cap; when it would not,
it waits for calls in flight to settle (their real cost is usually below the estimate), and raises
`BudgetExhausted` once nothing is in flight and the call still does not fit. `settle(reservation, actual_usd)`
turns the reservation into what the call really cost (0 for a call the provider did not bill). So no number
of units started at once can spend past the cap by more than the estimates were wrong.

`LocalBudget` is in-process (`gen run`). `RedisBudget` is fleet-wide: one atomic Lua script per operation on
keys per job, seeded from the database's spent total when a worker opens the job; a reservation whose holder
vanished (a killed worker) expires and is counted as spent, since the provider may have billed it.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import random
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass

from gen.errors import BudgetExhausted

log = logging.getLogger("gen.budget")


@dataclass(frozen=True)
class Reservation:
    id: str
    amount: float


def exhausted(spent: float, reserved: float, cap: float) -> BudgetExhausted:
    in_flight = f" (+${reserved:.4f} in flight)" if reserved > 0 else ""
    return BudgetExhausted(f"budget reached: ${spent:.4f} spent{in_flight} of ${cap:.4f}")


class Budget(ABC):
    """The cap on what a job's calls may cost, shared by every call that job makes."""

    cap: float

    @abstractmethod
    async def reserve(self, estimated_usd: float) -> Reservation:
        """Hold `estimated_usd` for one call; raises BudgetExhausted when it cannot fit."""

    @abstractmethod
    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """The call is over: release its reservation and count what it really cost."""

    @abstractmethod
    async def totals(self) -> tuple[float, float]:
        """(spent, reserved) now."""


def fits(spent: float, reserved: float, amount: float, cap: float) -> bool:
    return spent + reserved < cap and spent + reserved + amount <= cap + 1e-12


class LocalBudget(Budget):
    """In-process: every call of a `gen run` draws from it."""

    def __init__(self, cap: float, *, already_spent: float = 0.0):
        self.cap = cap
        self.spent = already_spent
        self.reserved = 0.0
        self._held: dict[str, float] = {}
        self._changed: asyncio.Condition | None = None
        self._ids = itertools.count(1)

    async def reserve(self, estimated_usd: float) -> Reservation:
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            while not fits(self.spent, self.reserved, estimated_usd, self.cap):
                if not self._held:
                    raise exhausted(self.spent, self.reserved, self.cap)
                await self._changed.wait()  # calls in flight may settle below their estimate
            reservation = Reservation(str(next(self._ids)), estimated_usd)
            self._held[reservation.id] = estimated_usd
            self.reserved += estimated_usd
            return reservation

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        amount = self._held.pop(reservation.id, None)
        if amount is not None:
            self.reserved = max(0.0, self.reserved - amount) if self._held else 0.0
        self.spent += actual_usd
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    async def totals(self) -> tuple[float, float]:
        return self.spent, self.reserved


# KEYS: state hash (spent, reserved), reservation expiries (zset), reservation amounts (hash).
# ARGV: id, amount, cap, already spent (the database's total), reservation lifetime, key ttl.
# Returns {'ok' | 'wait' | 'exhausted', spent, reserved}.
RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local amount, cap, seed = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
if seed > spent then spent = seed end
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, id in ipairs(dead) do
  local held = tonumber(redis.call('HGET', KEYS[3], id) or '0')
  reserved = reserved - held
  spent = spent + held
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[2], id)
end
if redis.call('ZCARD', KEYS[2]) == 0 then reserved = 0 end
local status = 'ok'
if spent + reserved >= cap or spent + reserved + amount > cap + 1e-12 then
  if reserved > 0 then status = 'wait' else status = 'exhausted' end
else
  reserved = reserved + amount
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[1])
  redis.call('HSET', KEYS[3], ARGV[1], string.format('%.12f', amount))
end
redis.call('HSET', KEYS[1], 'spent', string.format('%.12f', spent), 'reserved', string.format('%.12f', reserved))
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], tonumber(ARGV[6])) end
return {status, string.format('%.12f', spent), string.format('%.12f', reserved)}
"""

# KEYS: as above. ARGV: id, actual cost, key ttl.
SETTLE = """
local held = redis.call('HGET', KEYS[3], ARGV[1])
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
if held then
  reserved = reserved - tonumber(held)
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
if redis.call('ZCARD', KEYS[2]) == 0 or reserved < 0 then reserved = 0 end
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0') + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'spent', string.format('%.12f', spent), 'reserved', string.format('%.12f', reserved))
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], tonumber(ARGV[3])) end
return 1
"""

REDIS_WAIT_LIMIT = 120.0  # seconds a call waits for an unreachable Redis before it gives up


class RedisBudget(Budget):
    """Fleet-wide: every worker's calls for one job draw from the same keys."""

    def __init__(self, redis, job_id: str, cap: float, *, already_spent: float = 0.0,
                 reservation_seconds: float = 900.0, ttl: int = 7 * 24 * 3600, poll: float = 0.1):
        """`redis` is a `redis.asyncio.Redis` client of the caller's event loop. `already_spent`: the
        database's total for the job when this worker opened it. `reservation_seconds`: how long a reservation
        may live before it counts as spent (longer than a call with all its waits)."""
        self.redis = redis
        self.cap = cap
        self.already_spent = already_spent
        self.keys = [f"gen:budget:{job_id}", f"gen:budget:{job_id}:expiry", f"gen:budget:{job_id}:held"]
        self.reservation_seconds = reservation_seconds
        self.ttl = ttl
        self.poll = poll
        self._reserve = redis.register_script(RESERVE)
        self._settle = redis.register_script(SETTLE)

    async def reserve(self, estimated_usd: float) -> Reservation:
        reservation = Reservation(uuid.uuid4().hex, estimated_usd)
        while True:
            status, spent, reserved = await self._run(self._reserve, [
                reservation.id, estimated_usd, self.cap, self.already_spent, self.reservation_seconds, self.ttl])
            if status == "ok":
                return reservation
            if status == "exhausted":
                raise exhausted(float(spent), float(reserved), self.cap)
            await asyncio.sleep(self.poll * random.uniform(0.5, 1.5))  # calls in flight elsewhere may settle

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        await self._run(self._settle, [reservation.id, actual_usd, self.ttl])

    async def totals(self) -> tuple[float, float]:
        spent, reserved = await self.redis.hmget(self.keys[0], "spent", "reserved")
        return max(float(spent or 0), self.already_spent), float(reserved or 0)

    async def _run(self, script, args: list):
        from redis.exceptions import RedisError  # here, not on import: gen run's LocalBudget needs no redis

        delay, waited = 0.2, 0.0
        while True:
            try:
                result = await script(keys=self.keys, args=args)
                return [r.decode() if isinstance(r, bytes) else r for r in result] if isinstance(result, list) \
                    else result
            except RedisError as exc:
                if waited >= REDIS_WAIT_LIMIT:
                    raise BudgetExhausted(f"the fleet budget (Redis) is unreachable: {type(exc).__name__}") from None
                log.warning("budget: Redis error %s; trying again in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 5.0)
