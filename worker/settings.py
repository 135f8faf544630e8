"""Fleet settings, from the environment (read when asked for, never at import)."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from gen.config import load_settings
from gen.errors import UsageError


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{name} must be a number of seconds, not {raw!r}") from None
    if value <= 0:
        raise UsageError(f"{name} must be > 0")
    return value


@dataclass(frozen=True)
class FleetSettings:
    database_url: str
    redis_url: str
    lease_seconds: float      # a running unit's lease; renewed every lease/3 s while its worker lives
    sweep_seconds: float      # how often the fleet's supervisor looks for lost and stalled units
    stall_seconds: float      # a pending unit whose message is older than this, with its queue empty, is re-sent
    visibility_timeout: float  # Redis redelivers an unacked task after this; longer than any unit
    worker_name: str


def fleet_settings() -> FleetSettings:
    base = load_settings()
    return FleetSettings(
        database_url=base.database_url,
        redis_url=base.redis_url,
        lease_seconds=_number("GEN_LEASE_SECONDS", 120.0),
        sweep_seconds=_number("GEN_SWEEP_SECONDS", 30.0),
        stall_seconds=_number("GEN_STALL_SECONDS", 60.0),
        visibility_timeout=_number("GEN_VISIBILITY_TIMEOUT", 6 * 3600.0),
        worker_name=os.environ.get("GEN_WORKER_NAME") or f"{socket.gethostname()}:{os.getpid()}",
    )
