"""The limiter interface the teacher talks to. `gen run` uses the in-process one; the fleet shares one in Redis."""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Mapping

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str | None) -> float | None:
    """Provider reset durations: '1s', '250ms', '6m0s', '1h2m3.5s' -> seconds."""
    if not text:
        return None
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    total, matched = 0.0, False
    for number, unit in _DURATION.findall(text):
        matched = True
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total if matched else None


@dataclass
class Permit:
    """What `acquire` hands back; give it to `release` with the tokens the call really used."""

    estimated_tokens: int
    granted_at: float


@dataclass(frozen=True)
class HeaderHint:
    """What `x-ratelimit-*` headers say about the provider's own view of our budget."""

    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests: float | None = None
    reset_tokens: float | None = None
    limit_requests: int | None = None  # the provider's own limits per minute (`x-ratelimit-limit-*`)
    limit_tokens: int | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str] | None) -> "HeaderHint | None":
        if not headers:
            return None
        h = {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-ratelimit-")}
        if not h:
            return None

        def as_int(name: str) -> int | None:
            try:
                return int(float(h[name]))
            except (KeyError, ValueError):
                return None

        return cls(as_int("x-ratelimit-remaining-requests"), as_int("x-ratelimit-remaining-tokens"),
                   parse_duration(h.get("x-ratelimit-reset-requests")),
                   parse_duration(h.get("x-ratelimit-reset-tokens")),
                   as_int("x-ratelimit-limit-requests"), as_int("x-ratelimit-limit-tokens"))

    def pause_needed(self, next_tokens: int) -> float:
        """Seconds to hold off so the provider never has to refuse us (0 when there is headroom)."""
        wait = 0.0
        if self.remaining_requests is not None and self.remaining_requests <= 0:
            wait = max(wait, self.reset_requests or 1.0)
        if self.remaining_tokens is not None and self.remaining_tokens < next_tokens:
            wait = max(wait, self.reset_tokens or 1.0)
        return wait


class RateLimiter(ABC):
    """Per teacher. `acquire` waits for a concurrency slot, a request slot and a token budget."""

    @abstractmethod
    async def acquire(self, estimated_tokens: int) -> Permit: ...

    @abstractmethod
    async def release(self, permit: Permit, used_tokens: int | None) -> None:
        """Free the slot; correct the token budget from the response's `usage` (None: the call failed)."""

    @abstractmethod
    async def pause(self, seconds: float) -> None:
        """A 429 said wait: nobody using this teacher sends until then."""

    async def observe(self, hint: HeaderHint | None, next_tokens: int, *, elapsed: float = 0.0) -> None:
        """After an answer: adopt a lower `x-ratelimit-limit-*` as the pace, and hold off on
        `x-ratelimit-remaining-*` at zero before the provider has to refuse. `elapsed`: seconds since the call
        was sent (the provider's reset durations count from when it received the request, not from its answer)."""
        if hint is None:
            return
        if hint.limit_requests or hint.limit_tokens:
            await self.announce(hint.limit_requests, hint.limit_tokens)
        wait = hint.pause_needed(next_tokens) - elapsed
        if wait > 0:
            await self.pause(wait)

    async def refused(self, permit: Permit, hint: HeaderHint | None) -> None:
        """A 429 for the call `permit` started: learn the announced limit and lower the pace (AIMD).
        The caller still pauses for the provider's Retry-After."""
        if hint is not None and (hint.limit_requests or hint.limit_tokens):
            await self.announce(hint.limit_requests, hint.limit_tokens)
        await self.lower_pace(permit.granted_at)

    async def announce(self, limit_requests: int | None, limit_tokens: int | None) -> None:
        """The provider's own limits per minute; a limiter that adapts paces below them. Default: ignored."""

    async def lower_pace(self, granted_at: float) -> None:
        """Multiplicative decrease after a 429 for a call started at `granted_at`. Default: ignored."""

    async def current_rpm(self) -> float | None:
        """The requests per minute this limiter paces at now (None: no limit)."""
        return None

    async def aclose(self) -> None:
        return None
