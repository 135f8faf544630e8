"""The in-process limiter behind `gen run`: paced requests and tokens on an absolute timeline, plus a concurrency cap.

Request k starts at t0 + k*interval: each slot is planned from the previous *slot*, not from when its caller
happened to wake up, so late wake-ups (an event loop a millisecond behind) never add up into drift. A slot is
never given to a caller that had not asked yet: after an idle spell the timeline re-bases on the clock, so idle
time is not made up, and a caller that comes after its slot passed starts an interval after the last start at the
earliest. Slots that passed while callers were waiting for them (the event loop blocked for a moment: a burst of
answers, a slow write, the planner) are made up, back to back, for at most `CATCH_UP_SECONDS` (or one interval
when that is longer): at 1,200 RPM a stall of 0.3 s used to cost six slots for good, and stalls added up to
0.2-0.8 s per 600 calls; now up to five calls go at once, a burst the one-second grain providers enforce at
(OpenAI: 60,000 RPM "may be enforced as 1,000 per second") always admits. Each call's tokens advance a second
clock by tokens*60/TPM. Callers take their turn first come, first served, each sleeping exactly until its slot.

The pace adapts (`gen.ratelimit.pace`): a lower `x-ratelimit-limit-*` or repeated 429s slow it down, and it
recovers slowly toward the stated limits. A lowered pace re-plans the next slot from the last start, and a
Retry-After pause ends with calls paced at the lowered rate, not with a burst.
"""
from __future__ import annotations

import asyncio
import time

from gen.ratelimit.base import Permit, RateLimiter
from gen.ratelimit.pace import CATCH_UP_SECONDS, Pace


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
            asked = self._clock()  # after the concurrency cap: waiting for a free slot is not being behind
            async with self._turn:
                granted = await self._wait_for_slot(estimated_tokens, asked)
        except BaseException:
            self._slots.release()
            raise
        return Permit(estimated_tokens=estimated_tokens, granted_at=granted)

    async def _wait_for_slot(self, tokens: int, asked: float) -> float:
        now = self._clock()
        interval = self.pace.request_interval(now)
        if self._next_slot is None:
            self._next_slot = now
        elif self._next_slot < now:
            # The slot passed. A caller that was waiting for it makes it up (at most `CATCH_UP_SECONDS` late);
            # one that asked after it did not wait for it: it goes when it asked, and an interval after the last
            # start at the earliest (idle time is not made up, nor a fresh caller sent right behind another).
            if asked > self._next_slot:
                self._next_slot = max(asked, self._last_start + interval)
            self._next_slot = max(self._next_slot, now - max(interval, CATCH_UP_SECONDS))
        while True:
            # Re-read on every wake-up: a pause (a 429 elsewhere) or a lowered pace may have arrived meanwhile.
            target = max(self._next_slot, self._paused_until, self._token_clock)
            wait = target - self._clock()
            if wait <= 0:
                break
            await self._sleep(wait)
        granted = self._clock()
        interval = self.pace.request_interval(granted)
        # Plan from the slot, not from the wake-up; a caller woken later than `behind` makes up that much only.
        self._next_slot = max(target, granted - max(interval, CATCH_UP_SECONDS)) + interval
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
