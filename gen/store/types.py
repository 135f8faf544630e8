"""Column types that store any Python text on every database gen supports.

PostgreSQL `text` cannot hold NUL (`\\x00`); SQLite can. `StoredText` escapes reversibly on PostgreSQL only:
`\\uffff` (a Unicode noncharacter) is the escape mark, `\\uffff` -> `\\uffff\\uffff` and `\\x00` -> `\\uffff0`, and
unescapes on read, so an answer holding NUL is stored and read back byte-identical instead of failing the unit
and losing a paid call. SQLite stores text as given.

JSON columns need nothing: gen's JSON columns are PostgreSQL `json` (not `jsonb`), which keeps the document as
text and accepts `\\u0000` escapes, so `json.dumps` output round-trips. (gen never queries inside them with
`->>`, which would refuse such a row.)

`StoredText(scrubbed=True)` is for columns that hold error text from providers and exceptions (calls.error,
units.last_error, jobs.status_reason, ...): every registered secret is scrubbed before it is written, whatever
path the text took to get there.
"""
from __future__ import annotations

import re

from sqlalchemy.types import Text, TypeDecorator

from gen.secrets import scrub

ESCAPE = "\uffff"
_UNESCAPE = re.compile("\uffff(.)", re.S)


def escape_text(value: str) -> str:
    """Text PostgreSQL accepts, from any text (see `unescape_text`)."""
    if ESCAPE in value:
        value = value.replace(ESCAPE, ESCAPE + ESCAPE)
    if "\x00" in value:
        value = value.replace("\x00", ESCAPE + "0")
    return value


def unescape_text(value: str) -> str:
    if ESCAPE not in value:
        return value
    return _UNESCAPE.sub(lambda m: "\x00" if m.group(1) == "0" else m.group(1), value)


class StoredText(TypeDecorator):
    """Text that PostgreSQL stores losslessly (NUL included); `scrubbed=True` also scrubs secrets on write."""

    impl = Text
    cache_ok = True

    def __init__(self, *args, scrubbed: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.scrubbed = scrubbed

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if self.scrubbed:
            value = scrub(value)
        if dialect.name == "postgresql" and isinstance(value, str):
            return escape_text(value)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and dialect.name == "postgresql":
            return unescape_text(value)
        return value
