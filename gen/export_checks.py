"""Checking each exported line against its JSON Schema (schemas/conversation.schema.json, export_*.schema.json)
without running a schema validator per line.

For the formats whose lines are plain (messages, sharegpt, alpaca, text), a few lines of Python decide that a
line is valid: each check is a *sufficient* condition for the schema, written from it clause by clause, so a
line it passes is one the schema accepts. A line it does not pass goes to the schema validator (built once per
export), which says what is wrong in the same words as always, or finds the line valid after all (then it is
written: the schema decides, the check only saves its time). Other formats (DPO, KTO) go to the validator.
tests/test_export_checks.py compares both on generated lines.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gen.schemas import first_problem

_ROLES = frozenset(("system", "user", "assistant"))
_SHAREGPT_FROM = frozenset(("system", "human", "gpt"))
_MESSAGE_KEYS = frozenset(("role", "content"))
_SHAREGPT_KEYS = frozenset(("from", "value"))
_ALPACA_KEYS = frozenset(("instruction", "input", "output", "system"))


def _text(value: Any) -> bool:
    """The schema's `text`: a string of at least one character."""
    return type(value) is str and value != ""


def _turns(turns: Any, keys: frozenset[str], who: str, what: str, allowed: frozenset[str]) -> bool:
    """An array of at least 2 objects with exactly `keys`, `who` one of `allowed`, `what` a text."""
    if type(turns) is not list or len(turns) < 2:
        return False
    for turn in turns:
        if type(turn) is not dict or turn.keys() != keys:
            return False
        role = turn[who]
        if type(role) is not str or role not in allowed or not _text(turn[what]):
            return False
    return True


def messages_line(row: Any) -> bool:
    return type(row) is dict and row.keys() == {"messages"} and \
        _turns(row["messages"], _MESSAGE_KEYS, "role", "content", _ROLES)


def sharegpt_line(row: Any) -> bool:
    return type(row) is dict and row.keys() == {"conversations"} and \
        _turns(row["conversations"], _SHAREGPT_KEYS, "from", "value", _SHAREGPT_FROM)


def alpaca_line(row: Any) -> bool:
    return type(row) is dict and row.keys() == _ALPACA_KEYS and _text(row["instruction"]) and \
        _text(row["output"]) and type(row["input"]) is str and type(row["system"]) is str


def text_line(row: Any) -> bool:
    return type(row) is dict and row.keys() == {"text"} and _text(row["text"])


SUFFICIENT: dict[str, Callable[[Any], bool]] = {
    "messages": messages_line, "sharegpt": sharegpt_line, "alpaca": alpaca_line, "text": text_line,
}


class LineCheck:
    """`problem(row)`: what the schema (through `validator`, built once) finds wrong with a line, or None."""

    def __init__(self, fmt: str, validator: Any):
        self.sufficient = SUFFICIENT.get(fmt)
        self.validator = validator
        self.validated = 0  # lines that went to the schema validator

    def problem(self, row: Any) -> str | None:
        if self.sufficient is not None and self.sufficient(row):
            return None
        self.validated += 1
        return first_problem(self.validator, row)
