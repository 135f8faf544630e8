"""Per-second token buckets for the simulator's RPM / TPM limits.

Providers state limits per minute but enforce them at a finer grain.  Each
limit here is a bucket holding one second's worth: capacity = limit/60 (at
least 1), refilled continuously at limit/60 per second.  A client pacing
evenly at the stated rate therefore never sees a 429, while a burst above one
second's worth is refused.

Two details keep that promise robust:

* a small timing tolerance (``TIMING_TOLERANCE_S`` worth of refill) absorbs
  scheduling/network jitter of an evenly paced client;
* a request costing more than the bucket's capacity (e.g. a big max_tokens
  against a small TPM) is admitted once the bucket is full and then leaves the
  bucket in debt, so it is never starved yet the long-run rate still holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

TIMING_TOLERANCE_S = 0.05


def format_duration(seconds: float) -> str:
    """Format like OpenAI's reset headers: "250ms", "1s", "1.5s", "6m0s"."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        text = f"{seconds:.3f}".rstrip("0").rstrip(".")
        return f"{text}s"
    minutes, rest = divmod(seconds, 60)
    rest_text = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{rest_text}s"


class TokenBucket:
    """One limit (requests or tokens per minute) as a one-second bucket."""

    def __init__(self, per_minute: int, now: float) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` would be admitted (0.0 = admit now). Call refill first."""
        needed = min(cost, self.capacity) - self.rate * TIMING_TOLERANCE_S
        if self.level >= needed:
            return 0.0
        return (needed - self.level) / self.rate

    def take(self, cost: float) -> None:
        self.level -= cost

    def remaining(self) -> int:
        return max(0, math.floor(self.level))

    def until_full(self) -> float:
        return max(0.0, (self.capacity - self.level) / self.rate)


@dataclass
class RateDecision:
    allowed: bool
    retry_after_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class RateLimiter:
    """RPM and TPM buckets checked together; a request consumes from both or neither."""

    def __init__(self, rpm: int, tpm: int, now: float) -> None:
        self.requests = TokenBucket(rpm, now) if rpm > 0 else None
        self.tokens = TokenBucket(tpm, now) if tpm > 0 else None

    @property
    def active(self) -> bool:
        return self.requests is not None or self.tokens is not None

    def check(self, token_cost: float, now: float) -> RateDecision:
        """Admit (and charge) one request costing ``token_cost`` tokens, or refuse it."""
        if not self.active:
            return RateDecision(True)
        wait = 0.0
        for bucket, cost in ((self.requests, 1.0), (self.tokens, token_cost)):
            if bucket is not None:
                bucket.refill(now)
                wait = max(wait, bucket.wait_for(cost))
        if wait > 0.0:
            return RateDecision(False, wait, self.headers())
        if self.requests is not None:
            self.requests.take(1.0)
        if self.tokens is not None:
            self.tokens.take(token_cost)
        return RateDecision(True, 0.0, self.headers())

    def headers(self) -> dict[str, str]:
        """x-ratelimit-* headers for each limit that is set (limits are per minute)."""
        headers: dict[str, str] = {}
        for bucket, kind in ((self.requests, "requests"), (self.tokens, "tokens")):
            if bucket is None:
                continue
            headers[f"x-ratelimit-limit-{kind}"] = str(bucket.per_minute)
            headers[f"x-ratelimit-remaining-{kind}"] = str(bucket.remaining())
            headers[f"x-ratelimit-reset-{kind}"] = format_duration(bucket.until_full())
        return headers


def retry_headers(wait_s: float) -> dict[str, str]:
    """Retry-After (whole seconds, at least 1) and retry-after-ms (exact wait)."""
    return {
        "Retry-After": str(max(1, math.ceil(wait_s))),
        "retry-after-ms": str(max(1, math.ceil(wait_s * 1000))),
    }
