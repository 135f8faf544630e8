"""Plain data shared by every layer: chat messages, requests and completions."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

Role = Literal["system", "user", "assistant"]


class Message(TypedDict):
    role: Role
    content: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ChatRequest:
    """One chat-completions request as a provider adapter sends it."""

    model: str
    messages: list[Message]
    params: dict[str, Any] = field(default_factory=dict)  # temperature, top_p, max_tokens, seed...
    response_format: dict[str, Any] | None = None
    timeout: float = 120.0


@dataclass(frozen=True)
class Completion:
    """What a provider adapter returns for one successful HTTP exchange."""

    text: str
    finish_reason: str | None
    usage: Usage
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    model: str | None = None


def estimate_tokens(text: str) -> int:
    """About four characters per token (tiktoken would download its tables at run time)."""
    return (len(text) + 3) // 4


def estimate_prompt_tokens(messages: list[Message]) -> int:
    return sum(estimate_tokens(m["content"]) + 4 for m in messages)


@dataclass
class NewRecord:
    """What an instructor returns for a unit. The store keeps it once per (job, key)."""

    key: str
    conversation: list[Message]
    meta: dict[str, Any] = field(default_factory=dict)
    kind: str = "conversation"
