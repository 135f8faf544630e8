"""Adaptive pace: the rate a teacher may really use, learnt from the provider's headers and its 429s.

A job states `rpm`/`tpm`; a provider may allow less. Two signals lower the pace:
- `x-ratelimit-limit-requests` / `-tokens` announcing a limit below the stated one: the pace drops at once to
  `HEADROOM` of the announced limit (the provider said so; no 429 needed). A limit at or above the stated one
  leaves the stated pace whole;
- a 429 for a request that was sent at the current pace (429s for requests sent before the last decrease say
  nothing new): multiplicative decrease, `DECREASE` (or the gentler `DECREASE_KNOWN` when the pace is already at
  an announced limit, where a 429 is jitter rather than a wrong belief).
After a decrease the pace climbs back additively toward its ceiling (the lower of the stated and the announced
limit) over `RECOVERY_SECONDS`: AIMD, as TCP does. The fleet keeps the same state in Redis
(`gen.ratelimit.redis_limiter`, the same rules in Lua); this module is the in-process one and its constants.
"""
from __future__ import annotations

from dataclasses import dataclass, field

HEADROOM = 0.95           # pace at this share of an announced limit
DECREASE = 0.5            # factor on a 429 when no limit was announced
DECREASE_KNOWN = 0.8      # factor on a 429 when the pace already sits at an announced limit
RECOVERY_SECONDS = 300.0  # additive recovery: from 0 to the ceiling in this long (from half in half of it)
MIN_RPM = 1.0
MIN_TPM = 100.0
# gen run's limiter (gen.ratelimit.local): slots missed while callers waited for them (an event loop blocked for a
# moment) are made up for this long at most, or one interval when that is longer.
CATCH_UP_SECONDS = 0.25


def announced_cap(limit: float, stated: float | None) -> float:
    """The ceiling an announced limit puts on the pace: HEADROOM below it, unless it confirms the stated one."""
    return limit if stated and limit >= stated else limit * HEADROOM


@dataclass
class PaceDimension:
    """One limit (requests or tokens per minute): stated, announced, and where AIMD put it."""

    stated: float | None
    floor: float
    announced_cap: float | None = None  # HEADROOM x the provider's announced limit (x 1 when it confirms stated)
    base: float | None = None           # the rate right after the last decrease (None: at the ceiling)
    since: float = 0.0                  # when that decrease happened

    def ceiling(self) -> float | None:
        caps = [c for c in (self.stated, self.announced_cap) if c]
        return min(caps) if caps else None

    def rate(self, now: float) -> float | None:
        """Per minute, now; None: no limit known."""
        ceiling = self.ceiling()
        if self.base is None:
            return ceiling
        if ceiling is None:
            return self.base
        return min(ceiling, self.base + ceiling / RECOVERY_SECONDS * max(0.0, now - self.since))

    def announce(self, limit: float, now: float) -> bool:
        """The provider announced its limit. True when that lowered the pace. A limit at or above the stated one
        confirms the stated pace, which stands whole: headroom is for a belief the provider contradicts, not a
        tax on one it confirms (at 1,200 RPM stated and announced it cost 5% of every run)."""
        cap = announced_cap(limit, self.stated)
        if cap <= 0 or cap == self.announced_cap:
            return False
        before = self.rate(now)
        self.announced_cap = cap
        after = self.ceiling()
        if before is not None and after is not None and after > before:
            self.base, self.since = before, now  # a raised limit is climbed to slowly, from where we are
        return after is not None and (before is None or after < before)

    def decrease(self, now: float) -> bool:
        current = self.rate(now)
        if current is None:
            return False
        known = self.announced_cap is not None and current <= self.announced_cap * 1.0001
        self.base = max(self.floor, current * (DECREASE_KNOWN if known else DECREASE))
        self.since = now
        return True


@dataclass
class Pace:
    """Requests and tokens per minute for one limiter scope, adapting to what the provider allows."""

    requests: PaceDimension
    tokens: PaceDimension
    adaptive: bool = True
    last_decrease: float = float("-inf")
    changes: int = field(default=0)  # bumped whenever the pace was lowered (waiters re-plan their slot)

    @classmethod
    def stated(cls, rpm: float | None, tpm: float | None, *, adaptive: bool = True) -> "Pace":
        return cls(PaceDimension(rpm or None, MIN_RPM), PaceDimension(tpm or None, MIN_TPM), adaptive)

    def request_interval(self, now: float) -> float:
        rate = self.requests.rate(now)
        return 60.0 / rate if rate else 0.0

    def seconds_per_token(self, now: float) -> float:
        rate = self.tokens.rate(now)
        return 60.0 / rate if rate else 0.0

    def announce(self, limit_requests: float | None, limit_tokens: float | None, now: float) -> bool:
        """`x-ratelimit-limit-*` seen. True when the pace was lowered."""
        if not self.adaptive:
            return False
        lowered = False
        if limit_requests:
            lowered |= self.requests.announce(limit_requests, now)
        if limit_tokens:
            lowered |= self.tokens.announce(limit_tokens, now)
        if lowered:
            self.last_decrease = now  # calls sent before this were at the old pace: their 429s are not news
            self.changes += 1
        return lowered

    def refused(self, granted_at: float, now: float) -> bool:
        """A 429 for a request started at `granted_at`. True when the pace was lowered."""
        if not self.adaptive or granted_at < self.last_decrease:
            return False  # sent at the old pace: that pace was already corrected
        lowered = self.requests.decrease(now)
        lowered |= self.tokens.decrease(now)
        if lowered:
            self.last_decrease = now
            self.changes += 1
        return lowered
