"""Each exported line: checked against its JSON Schema (schemas/conversation.schema.json, export_*.schema.json)
without running a schema validator per line, and turned into JSON text.

For the formats whose lines are plain (messages, sharegpt, alpaca, text), a few lines of Python decide that a
line is valid: each check is a *sufficient* condition for the schema, written from it clause by clause, so a
line it passes is one the schema accepts. A line it does not pass goes to the schema validator (built once per
export), which says what is wrong in the same words as always, or finds the line valid after all (then it is
written: the schema decides, the check only saves its time). Other formats (DPO, KTO) go to the validator.

The text of a line is what `json.dumps(row, ensure_ascii=False)` gives, byte for byte. For messages and
sharegpt lines (without `--meta`) it is put together from the same C string encoder json.dumps uses, in the
same loop as the check: a third of the time of json.dumps for the same bytes.
tests/test_export_lines.py compares both with the schema and with json.dumps on generated lines.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import encode_basestring
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



# json.dumps(row, ensure_ascii=False) makes this encoder anew for every line; the bytes are the same
encode = json.JSONEncoder(ensure_ascii=False).encode


def _turns_text(turns: Any, who: str, what: str, allowed: frozenset[str]) -> str | None:
    """`_turns`' check, and the array's JSON text when it passes: each turn a dict of exactly `who` then `what`
    (json.dumps writes keys in the dict's order), both strings."""
    if type(turns) is not list or len(turns) < 2:
        return None
    parts = []
    for turn in turns:
        if type(turn) is not dict or len(turn) != 2:
            return None
        first, second = turn
        if first != who or second != what:
            return None
        role, text = turn[who], turn[what]
        if type(role) is not str or role not in allowed or type(text) is not str or text == "":
            return None
        parts.append(f'{{"{who}": {encode_basestring(role)}, "{what}": {encode_basestring(text)}}}')
    return "[" + ", ".join(parts) + "]"


def messages_text(row: Any) -> str | None:
    if type(row) is not dict or len(row) != 1 or "messages" not in row:
        return None
    turns = _turns_text(row["messages"], "role", "content", _ROLES)
    return None if turns is None else '{"messages": ' + turns + "}"


def sharegpt_text(row: Any) -> str | None:
    if type(row) is not dict or len(row) != 1 or "conversations" not in row:
        return None
    turns = _turns_text(row["conversations"], "from", "value", _SHAREGPT_FROM)
    return None if turns is None else '{"conversations": ' + turns + "}"


# A line's text when it passes its format's check (else None: check it, then `encode` it)
CHECKED_TEXT: dict[str, Callable[[Any], str | None]] = {"messages": messages_text, "sharegpt": sharegpt_text}


class LineCheck:
    """`problem(row)`: what the schema (through the validator `make_validator` builds, once, when a line first needs
    it) finds wrong with a line, or None."""

    def __init__(self, fmt: str, make_validator: Callable[[], Any]):
        self.sufficient = SUFFICIENT.get(fmt)
        self.make_validator = make_validator
        self.validator: Any = None
        self.validated = 0  # lines that went to the schema validator

    def problem(self, row: Any) -> str | None:
        if self.sufficient is not None and self.sufficient(row):
            return None
        self.validated += 1
        if self.validator is None:
            self.validator = self.make_validator()
        return first_problem(self.validator, row)
