"""A record's screen: the checks that decide what enters training data, run once, when the record is stored.

When the core stores a record it has already checked its shape (gen.conversation: turns of exactly role and
content, roles alternating, no empty turn); it then runs the default refusal filter (gen.refusals: refusals and AI
disclaimers, or disclaimers only when the record's meta says refusals are its point) and keeps the verdict with
the record as one short text, `records.screen`:

    <version>                       nothing found
    <version> <kind> <rule> <text>  the first match (fields separated by the unit separator, \\x1f)

`<version>` is a digest of the code that decides (this module, gen.refusals, gen.conversation) and of the Unicode
tables normalising uses. `gen export` takes a verdict from a record whose version is this gen's, and checks again,
as before, a record stored by an earlier gen (no screen, or another version) or when the export adds phrases or
patterns of its own: a verdict is reused only where checking again would give the same answer.
"""
from __future__ import annotations

import functools
import hashlib
import unicodedata
from pathlib import Path
from typing import Any

from gen.refusals import DISCLAIMER, KINDS, Match, RefusalDetector

_SEP = "\x1f"


@functools.cache
def screen_version() -> str | None:
    """The digest of the deciding code, or None where its source cannot be read (then no verdict is reused)."""
    import gen.conversation
    import gen.refusals

    digest = hashlib.sha256(unicodedata.unidata_version.encode())
    for module in (gen.refusals, gen.conversation):
        try:
            digest.update(Path(module.__file__ or "").read_bytes())
        except OSError:
            return None
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


@functools.cache
def default_detectors() -> tuple[RefusalDetector, RefusalDetector]:
    """(refusals and disclaimers, disclaimers only): what `gen export` filters with when given no extras."""
    return RefusalDetector(KINDS), RefusalDetector([DISCLAIMER])


def default_match(conversation: list[dict[str, Any]], meta: dict[str, Any] | None) -> Match | None:
    """What the default refusal filter finds in a conversation (disclaimers only if refusals are its point)."""
    everything, disclaimers = default_detectors()
    detector = disclaimers if (meta or {}).get("refusals_expected") else everything
    return detector.match_conversation(conversation)


def in_stored_order(conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The turns with role before content (the order export lines have), as they are stored; the same list when it
    already is."""
    if all(next(iter(m)) == "role" for m in conversation):
        return conversation
    return [{"role": m["role"], "content": m["content"]} for m in conversation]


def screen(conversation: list[dict[str, Any]], meta: dict[str, Any] | None) -> str | None:
    """The screen text of a well-formed conversation (gen.conversation said so): version and verdict."""
    version = screen_version()
    if version is None:
        return None
    found = default_match(conversation, meta)
    if found is None:
        return version
    text = " ".join(found.text.split())[:200]
    return _SEP.join((version, found.kind, found.rule, text))


class Verdict:
    """A stored screen this gen can reuse: `match` is what the default refusal filter found (None: nothing)."""

    __slots__ = ("match",)

    def __init__(self, match: Match | None):
        self.match = match


CLEAN = Verdict(None)


def read_screen(text: str | None) -> Verdict | None:
    """The verdict in a stored screen, or None when it was not made by this gen's checks (check again)."""
    if not text:
        return None
    version = screen_version()
    if text == version:
        return CLEAN
    if version is None or not text.startswith(version + _SEP):
        return None
    parts = text.split(_SEP)
    if len(parts) != 4:
        return None
    return Verdict(Match(parts[1], parts[2], parts[3]))
