"""Configuration of the teacher simulator: one validated dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

RATE_FIELDS = (
    "echo_key_rate",
    "error_rate",
    "hang_rate",
    "malformed_rate",
    "truncate_rate",
    "schema_violation_rate",
)
NON_NEGATIVE_FLOAT_FIELDS = ("latency", "jitter", "hang_seconds")
NON_NEGATIVE_INT_FIELDS = ("rpm", "tpm")
# Fields that only matter when the server starts; they cannot be patched live.
STARTUP_ONLY_FIELDS = ("host", "port")


@dataclass(frozen=True)
class SimConfig:
    """Everything the simulator can be told.

    rpm / tpm: requests and tokens per minute, 0 = unlimited.
    latency / jitter: each successful answer waits latency +- uniform(jitter) seconds.
    *_rate: probability per request of each injected fault.
    echo_key_status: 0 = off; else every chat request is answered with this HTTP status (e.g. 401, 500) and a
      body quoting the request's bearer token whole and masked, as proxies and OpenAI do (tests of scrubbing);
      echo_key_rate: the share of requests so answered (the others are served as usual).
    seed: None = non-deterministic; an int makes content and faults reproducible.
    """

    host: str = "127.0.0.1"
    port: int = 0
    latency: float = 0.0
    jitter: float = 0.0
    rpm: int = 0
    tpm: int = 0
    error_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 3600.0
    malformed_rate: float = 0.0
    truncate_rate: float = 0.0
    schema_violation_rate: float = 0.0
    reject_json_schema: bool = False
    echo_key_status: int = 0
    echo_key_rate: float = 1.0
    seed: int | None = None
    model: str = "sim-1"

    def __post_init__(self) -> None:
        validate_config(self)

    def with_changes(self, patch: Mapping[str, Any]) -> "SimConfig":
        """Return a validated copy with ``patch`` applied (unknown fields -> ValueError)."""
        known = {f.name for f in dataclasses.fields(self)}
        for name in patch:
            if name not in known:
                raise ValueError(f"unknown config field: {name!r}")
        return dataclasses.replace(self, **dict(patch))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_config(config: SimConfig) -> None:
    """Raise ValueError with a one-line message naming the first bad field."""
    if not isinstance(config.host, str) or not config.host:
        raise ValueError(f"host must be a non-empty string, got {config.host!r}")
    if not isinstance(config.port, int) or isinstance(config.port, bool) or not 0 <= config.port <= 65535:
        raise ValueError(f"port must be an integer in 0..65535, got {config.port!r}")
    for name in NON_NEGATIVE_INT_FIELDS:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    for name in NON_NEGATIVE_FLOAT_FIELDS:
        value = getattr(config, name)
        if not _is_number(value) or value < 0 or value != value:
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    for name in RATE_FIELDS:
        value = getattr(config, name)
        if not _is_number(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a probability between 0 and 1, got {value!r}")
    if not isinstance(config.reject_json_schema, bool):
        raise ValueError(f"reject_json_schema must be a boolean, got {config.reject_json_schema!r}")
    if not isinstance(config.echo_key_status, int) or isinstance(config.echo_key_status, bool) or not (
            config.echo_key_status == 0 or 400 <= config.echo_key_status <= 599):
        raise ValueError(f"echo_key_status must be 0 or an HTTP error status, got {config.echo_key_status!r}")
    if config.seed is not None and (not isinstance(config.seed, int) or isinstance(config.seed, bool)):
        raise ValueError(f"seed must be an integer or null, got {config.seed!r}")
    if not isinstance(config.model, str) or not config.model:
        raise ValueError(f"model must be a non-empty string, got {config.model!r}")
