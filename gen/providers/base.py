"""The provider interface and the helpers every adapter shares."""
from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from typing import Mapping

from gen.errors import (AuthError, BadRequest, RateLimited, ResponseFormatUnsupported, ServerError,
                        TeacherError)
from gen.secrets import scrub
from gen.types import ChatRequest, Completion


class Provider(ABC):
    """Sends one chat request; raises a `gen.errors.TeacherError` subclass on failure."""

    name: str

    @abstractmethod
    async def complete(self, request: ChatRequest) -> Completion: ...

    async def aclose(self) -> None:  # pragma: no cover - adapters override when they hold a client
        return None


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """`retry-after-ms` or `retry-after` (seconds) as a float, or None."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        if "retry-after-ms" in lowered:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        if "retry-after" in lowered:
            return max(0.0, float(lowered["retry-after"]))
    except ValueError:
        return None
    return None


def rate_limit_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Only the `x-ratelimit-*` headers: what the limiter learns the provider's limits from."""
    return {k.lower(): v for k, v in (headers or {}).items() if k.lower().startswith("x-ratelimit-")}


def _error_message(body: str | None) -> str:
    if not body:
        return ""
    try:
        data = json.loads(body)
        err = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or "")[:300]
        return str(err)[:300]
    except (ValueError, AttributeError):
        return body.strip().splitlines()[0][:300] if body.strip() else ""


_RESPONSE_FORMAT = re.compile(r"response_format|json_schema|structured output", re.I)


def error_for_status(status: int, body: str | None, headers: Mapping[str, str] | None, *,
                     teacher: str) -> TeacherError:
    """Map an HTTP error status to gen's error family, by status code (never by matching 429 text).

    The body is scrubbed of every registered secret first: proxies echo the key whole in 401/500 bodies,
    OpenAI a masked form; the message and `raw` built from it are stored, logged and shown."""
    body = scrub(body)
    detail = _error_message(body)
    suffix = f": {detail}" if detail else ""
    if status == 429:
        wait = retry_after_seconds(headers)
        return RateLimited(f"teacher '{teacher}': rate limited (HTTP 429){suffix}", status=status,
                           retry_after=wait, raw=body, rate_headers=rate_limit_headers(headers))
    if status in (401, 403):
        return AuthError(f"teacher '{teacher}': the API key was refused (HTTP {status}){suffix}", status=status)
    if status in (408, 409) or status >= 500:
        return ServerError(f"teacher '{teacher}': server error (HTTP {status}){suffix}", status=status,
                           retry_after=retry_after_seconds(headers), raw=body)
    if status in (400, 422) and _RESPONSE_FORMAT.search(detail or ""):
        return ResponseFormatUnsupported(f"teacher '{teacher}': response_format refused{suffix}", status=status)
    return BadRequest(f"teacher '{teacher}': request refused (HTTP {status}){suffix}", status=status, raw=body)
