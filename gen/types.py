"""Plain data shared by every layer: chat messages, requests and completions."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol, TypedDict

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
    screen: str | None = None  # set by the core when it stores the record (gen.record_screen); instructors leave it


@dataclass
class Reply:
    """A teacher's accepted answer: its text, the parsed JSON when a schema was asked for, and the call it came from."""

    text: str
    data: Any = None
    call_id: int | None = None
    replayed: bool = False


Check = Callable[[Reply], "str | None"]


class Teacher(Protocol):
    """What an instructor receives for each teacher it names: ask, get a validated reply.

    The execution core hands each unit an object with this shape (gen.teacher.UnitTeacher), bound to the unit's
    journal: every call is recorded, an answer already paid for is replayed, and rate limits, retries, structured
    output and the budget are handled below it. An instructor never learns which provider or driver it runs on.
    """

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    async def chat(self, messages: list[Message], *, schema: dict[str, Any] | None = None,
                   schema_name: str = "output", check: Check | None = None, **overrides: Any) -> Reply:
        """Text (or JSON valid against `schema`, in `.data`). `check` may refuse a reply with a reason, and it is
        asked again up to `run.output_attempts`; raises gen.errors.OutputRejected when no attempt passes."""
        ...
