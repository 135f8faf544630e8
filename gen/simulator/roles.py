"""Which part a request asks the simulator to play, read from the request itself.

A dry run should show each instructor working, so the simulator recognises what it is asked and plays that
part (gen/simulator/code.py, gen/simulator/obedience.py) instead of answering every request with generic
text or a random instance of the schema:

| request | answer |
|---|---|
| per-turn judge scores (a `turns` schema, a conversation of `[assistant, turn N]` blocks) | scores from the rules the judged system prompt states |
| system prompts of a category (a `prompts` schema of `system_prompt` items) | prompts of that category, with constraint ids |
| coding tasks in a language (a `tasks` schema of `instruction` items) | tasks in that language, different ones |
| code: "only the complete X source code" / "the complete X code in one fenced code block" | a program in X, bare or explained and fenced |
| a role-played user (a system prompt saying so) | the user's next message, or the end sentinel now and then |
| anything else in text | the assistant's reply, keeping to the system prompt most of the time |

Anything else (other schemas) is left to the generic generators in gen/simulator/content.py.
"""
from __future__ import annotations

import random
from typing import Any

from .code import code_answer, coding_tasks
from .content import message_text
from .obedience import assistant_turn, judge_turns, system_prompt_batch, user_turn

USER_SIMULATOR_MARK = "role-playing a human user"


def _texts(messages: list) -> tuple[str, str, str]:
    """(system prompt, last user message, last message of any other role) of a request."""
    system = "\n".join(message_text(m.get("content")) for m in messages if m.get("role") == "system")
    user = next((message_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    other = next((message_text(m.get("content")) for m in reversed(messages) if m.get("role") != "system"), "")
    return system, user, other


def structured_answer(messages: list, schema: Any, rng: random.Random) -> Any | None:
    """An instance for the schemas whose content matters to a dry run, or None to leave it to the generic one."""
    if not isinstance(schema, dict):
        return None
    props = schema.get("properties") or {}
    _system, user, _other = _texts(messages)
    if "turns" in props and "[assistant, turn" in user:
        return judge_turns(user, rng)
    for name, field, make in (("prompts", "system_prompt", system_prompt_batch),
                              ("tasks", "instruction", coding_tasks)):
        items = (props.get(name) or {}).get("items") or {}
        if field in (items.get("properties") or {}):
            return make(user, props[name].get("minItems") or 5, rng)
    return None


def text_answer(messages: list, rng: random.Random) -> str:
    """The reply to a plain-text request."""
    system, user, last = _texts(messages)
    code = code_answer(user, rng)
    if code is not None:
        return code
    if USER_SIMULATOR_MARK in system:
        return user_turn(system, rng, last)
    return assistant_turn(system or None, rng, user)


__all__ = ["structured_answer", "text_answer"]
