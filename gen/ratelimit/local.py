"""The in-process limiter behind `gen run`: GCRA pacing of requests and tokens, plus a concurrency cap.

Requests start no closer together than 60/RPM seconds, and each call's tokens advance a second clock by
tokens*60/TPM, so the stated limits hold at any grain a provider enforces them (providers may check a
60,000 RPM limit as 1,000 per second). Waiters are served first come, first served, each sleeping exactly
until its slot instead of polling.
"""
from __future__ import annotations

import asyncio
import time

from gen.ratelimit.base import Permit, RateLimiter


class LocalRateLimiter(RateLimiter):
    def __init__(self, *, rpm: float | None = None, tpm: float | None = None, max_concurrency: int = 64,
                 clock=time.monotonic):
        self.request_interval = 60.0 / rpm if rpm else 0.0
        self.seconds_per_token = 60.0 / tpm if tpm else 0.0
        self.max_concurrency = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency)
        self._clock = clock
        self._next_request = 0.0   # earliest start of the next request
        self._token_clock = 0.0    # theoretical arrival time on the token clock
        self._paused_until = 0.0
        self._last_start = float("-inf")  # when the last permit was really granted

    async def acquire(self, estimated_tokens: int) -> Permit:
        await self._slots.acquire()
        try:
            now = self._clock()
            start = max(now, self._next_request, self._paused_until, self._token_clock)
            if self.request_interval:
                self._next_request = start + self.request_interval
            if self.seconds_per_token:
                self._token_clock = start + estimated_tokens * self.seconds_per_token
            # Sleep until the slot. A pause that arrived while we slept (a 429 elsewhere) still applies to us,
            # and so does a late wake-up of the caller before us: starts never come closer than the interval.
            while True:
                wait = max(start, self._paused_until, self._last_start + self.request_interval) - self._clock()
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            granted = self._clock()
            self._last_start = granted
            if self.request_interval:
                self._next_request = max(self._next_request, granted + self.request_interval)
        except BaseException:
            self._slots.release()
            raise
        return Permit(estimated_tokens=estimated_tokens, granted_at=granted)

    async def release(self, permit: Permit, used_tokens: int | None) -> None:
        if self.seconds_per_token and used_tokens is not None:
            # Give back (or charge) the difference between the estimate and what `usage` reported.
            corrected = self._token_clock + (used_tokens - permit.estimated_tokens) * self.seconds_per_token
            self._token_clock = max(corrected, self._clock())  # a refund never becomes a burst later
        self._slots.release()

    async def pause(self, seconds: float) -> None:
        until = self._clock() + seconds
        if until > self._paused_until:
            self._paused_until = until
        self._next_request = max(self._next_request, until)
