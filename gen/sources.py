"""Source conversations for instructors that build on existing ones (dpo_reroll, systemchat): an earlier job's records,
or a JSONL file in ShareGPT (`{"conversations": [{"from", "value"}]}`) or OpenAI-messages
(`{"messages": [{"role", "content"}]}`) form.

Earlier jobs' records reach instructors through `JobServices.earlier` (gen.core.services reads them from the
database); this module never opens one. Every conversation comes with a link to where it came from; a file's bad lines are returned (and logged,
one warning each) with their line numbers, never dropped silently.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gen.conversation import conversation_problem
from gen.errors import JobFileError
from gen.types import Message

log = logging.getLogger("gen.sources")

SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "chatgpt": "assistant", "model": "assistant"}


@dataclass(frozen=True)
class SourceConversation:
    conversation: list[Message]
    link: dict[str, Any]          # {"job_id", "job_name", "record_id", "record_key"} or {"file", "line"}
    author: dict[str, Any] = field(default_factory=dict)  # job, instructor, teacher/model of its answers
    meta: dict[str, Any] = field(default_factory=dict)    # the source record's meta, when it is one


@dataclass(frozen=True)
class BadLine:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file} line {self.line}: {self.reason}"


@dataclass
class SourceFile:
    conversations: list[SourceConversation]
    bad_lines: list[BadLine]


# any input file a job names ------------------------------------------------------------------------------
def read_text_file(path: Path | str, *, label: str, option: str) -> str:
    """The text of an input file a job names (prompts, seeds, source conversations), as UTF-8 (a BOM is
    allowed). A missing or unreadable file, UTF-16, or binary content is a JobFileError naming the option."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise JobFileError(label, [f"{option}: cannot read {path} ({exc.strerror or type(exc).__name__})"]) from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise JobFileError(label, [f"{option}: {path} is UTF-16 text: save it as UTF-8"])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise JobFileError(label, [f"{option}: {path} is not UTF-8 text (byte {exc.start} cannot be read): "
                                   "a binary file?"]) from None
    if "\x00" in text:
        raise JobFileError(label, [f"{option}: {path} holds NUL bytes: a binary file, not text"])
    return text


# a JSONL file --------------------------------------------------------------------------------------------
def read_conversation_file(path: Path, *, shown_as: str, label: str,
                           option: str = "instructor.source_file") -> SourceFile:
    """Every well-formed line of a JSONL file; each bad line is logged and returned with its number and reason.

    A file with no good line at all is a JobFileError (naming the first bad line when there is one)."""
    lines = read_text_file(path, label=label, option=option).splitlines()
    good: list[SourceConversation] = []
    bad: list[BadLine] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            conversation = conversation_from_row(row)
        except ValueError as exc:
            problem = BadLine(shown_as, number, str(exc) if not isinstance(exc, json.JSONDecodeError)
                              else f"not valid JSON ({exc.msg})")
            log.warning("%s: %s (line skipped)", option, problem)
            bad.append(problem)
            continue
        model = row.get("model") if isinstance(row.get("model"), str) else None
        good.append(SourceConversation(conversation, {"file": shown_as, "line": number},
                                       {"file": shown_as, "model": model}))
    if not good:
        why = f": {bad[0]}" + (f" (and {len(bad) - 1} more bad lines)" if len(bad) > 1 else "") if bad else \
            f": {shown_as} has no lines"
        raise JobFileError(label, [f"{option}: no usable conversation{why}"])
    return SourceFile(good, bad)


def conversation_from_row(row: Any) -> list[Message]:
    """One JSONL row as a conversation; ValueError says what is wrong with it."""
    if not isinstance(row, dict):
        raise ValueError("a line must be a JSON object with `conversations` (ShareGPT) or `messages`")
    if isinstance(row.get("conversations"), list):
        conversation = [_sharegpt_turn(i, turn) for i, turn in enumerate(row["conversations"])]
        system = row.get("system")
        if isinstance(system, str) and system.strip() and (not conversation or conversation[0]["role"] != "system"):
            conversation.insert(0, {"role": "system", "content": system})
    elif isinstance(row.get("messages"), list):
        conversation = [_openai_message(i, msg) for i, msg in enumerate(row["messages"])]
    else:
        raise ValueError("no `conversations` (ShareGPT) or `messages` (OpenAI) list")
    problem = conversation_problem(conversation)
    if problem:
        raise ValueError(problem)
    return conversation


def _sharegpt_turn(i: int, turn: Any) -> Message:
    if not isinstance(turn, dict) or not isinstance(turn.get("from"), str) or not isinstance(turn.get("value"), str):
        raise ValueError(f"conversations[{i}]: must be {{from, value}} with string values")
    role = SHAREGPT_ROLES.get(turn["from"].lower())
    if role is None:
        raise ValueError(f"conversations[{i}]: unsupported speaker '{turn['from']}' "
                         "(system, human/user, gpt/assistant)")
    return {"role": role, "content": turn["value"]}  # type: ignore[typeddict-item]


def _openai_message(i: int, msg: Any) -> Message:
    if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) or not isinstance(msg.get("content"), str):
        raise ValueError(f"messages[{i}]: must be {{role, content}} with string content")
    if msg["role"] not in ("system", "user", "assistant"):
        raise ValueError(f"messages[{i}]: unsupported role '{msg['role']}' (system, user, assistant)")
    return {"role": msg["role"], "content": msg["content"]}  # type: ignore[typeddict-item]
