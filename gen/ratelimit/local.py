"""The in-process limiter behind `gen run`: paced requests and tokens on an absolute timeline, plus a concurrency cap.

Request k starts at t0 + k*interval: each slot is planned from the previous *slot*, not from when its caller
happened to wake up, so late wake-ups (an event loop a millisecond behind) never add up into drift. The timeline
is re-based on the clock only when the limiter went idle (nobody waiting when a slot passed), or when a caller
woke a whole interval late (the slot is lost rather than made up in a burst). Each call's tokens advance a second
clock by tokens*60/TPM. Callers take their turn first come, first served, each sleeping exactly until its slot.

The pace adapts (`gen.ratelimit.pace`): a lower `x-ratelimit-limit-*` or repeated 429s slow it down, and it
recovers slowly toward the stated limits. A lowered pace re-plans the next slot from the last start, and a
Retry-After pause ends with calls paced at the lowered rate, not with a burst.
"""
from __future__ import annotations

import asyncio
import time

from gen.ratelimit.base import Permit, RateLimiter
from gen.ratelimit.pace import Pace


class LocalRateLimiter(RateLimiter):
    def __init__(self, *, rpm: float | None = None, tpm: float | None = None, max_concurrency: int = 64,
                 adaptive: bool = True, clock=time.monotonic, sleep=asyncio.sleep):
        self.pace = Pace.stated(rpm, tpm, adaptive=adaptive)
        self.max_concurrency = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency)
        self._turn = asyncio.Lock()  # FIFO: one caller at a time waits for the next slot
        self._clock = clock
        self._sleep = sleep
        self._next_slot: float | None = None  # start of the next request on the timeline
        self._token_clock = float("-inf")     # theoretical arrival time on the token clock
        self._paused_until = float("-inf")
        self._last_start = float("-inf")      # when the last permit was really granted

    async def acquire(self, estimated_tokens: int) -> Permit:
        await self._slots.acquire()
        try:
            async with self._turn:
                granted = await self._wait_for_slot(estimated_tokens)
        except BaseException:
            self._slots.release()
            raise
        return Permit(estimated_tokens=estimated_tokens, granted_at=granted)

    async def _wait_for_slot(self, tokens: int) -> float:
        now = self._clock()
        if self._next_slot is None or self._next_slot < now:
            self._next_slot = now  # idle: nobody was waiting when the slot passed
        while True:
            # Re-read on every wake-up: a pause (a 429 elsewhere) or a lowered pace may have arrived meanwhile.
            target = max(self._next_slot, self._paused_until, self._token_clock)
            wait = target - self._clock()
            if wait <= 0:
                break
            await self._sleep(wait)
        granted = self._clock()
        interval = self.pace.request_interval(granted)
        # Plan from the slot, not from the wake-up; a caller a whole interval late lost its slot instead.
        self._next_slot = (target if granted - target < interval else granted) + interval
        per_token = self.pace.seconds_per_token(granted)
        if per_token:
            self._token_clock = max(self._token_clock, target) + tokens * per_token
        self._last_start = granted
        return granted

    async def release(self, permit: Permit, used_tokens: int | None) -> None:
        per_token = self.pace.seconds_per_token(self._clock())
        if per_token and used_tokens is not None:
            # Give back (or charge) the difference between the estimate and what `usage` reported.
            corrected = self._token_clock + (used_tokens - permit.estimated_tokens) * per_token
            self._token_clock = max(corrected, self._clock())  # a refund never becomes a burst later
        self._slots.release()

    async def pause(self, seconds: float) -> None:
        until = self._clock() + seconds
        if until > self._paused_until:
            self._paused_until = until

    async def announce(self, limit_requests: int | None, limit_tokens: int | None) -> None:
        if self.pace.announce(limit_requests, limit_tokens, self._clock()):
            self._replan()

    async def lower_pace(self, granted_at: float) -> None:
        if self.pace.refused(granted_at, self._clock()):
            self._replan()

    async def current_rpm(self) -> float | None:
        return self.pace.requests.rate(self._clock())

    def _replan(self) -> None:
        """The pace was lowered: the next slot comes a new interval after the last start, not on the old plan."""
        if self._last_start > float("-inf"):
            later = self._last_start + self.pace.request_interval(self._clock())
            if self._next_slot is None or later > self._next_slot:
                self._next_slot = later
