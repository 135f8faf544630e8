"""Turn filters: what makes a simulated user's or an assistant's turn unusable, as a reason string.

They run as the teacher's `check`, so a refused turn is asked for again (`run.output_attempts`) before the
conversation is given up.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from gen.instructors.systemchat.similarity import containment, jaccard, normalise, shingles
from gen.refusals import DISCLAIMER, RefusalDetector

# AI disclaimers ("As an AI, ...", "I was trained by OpenAI", "that goes against my guidelines") come from the
# shared detector (gen.refusals), which matches them as phrases, not substrings: "as an aid", a user asking
# about OpenAI's content policy, or a character refusing in quoted speech are usable turns. Plain refusals
# ("I'm sorry, I can't discuss that") are NOT filtered here: guardrail system prompts make them the right answer
# (export drops them from records that do not expect them).

# A line opening with a speaker label, or a chat-template token: another turn leaking into this one.
ROLE_LABEL_RE = re.compile(
    r"(?im)^[\s>*#_\[]*(user|assistant|human|gpt|system|ai)\s*[\]*_]*\s*:"
    r"|<\|im_(start|end)\|>|\[/?INST\]|<\|(user|assistant|system)\|>|<</?SYS>>"
)


class TurnFilter:
    """A turn's problems: empty, a role label leaking in, an AI disclaimer or a job's own phrase, an echo."""

    def __init__(self, extra_phrases: Iterable[str] = (), *, extra_patterns: Iterable[str] = (),
                 echo_threshold: float = 0.6):
        self.detector = RefusalDetector([DISCLAIMER], extra_phrases=extra_phrases, extra_patterns=extra_patterns)
        self.echo_threshold = echo_threshold

    def problem(self, text: str, *, previous: str | None = None, echo_check: bool = False) -> str | None:
        """Why `text` cannot be a turn, or None. `previous` is the other side's last turn (for the echo test)."""
        if not text.strip():
            return "empty turn"
        label = ROLE_LABEL_RE.search(text)
        if label:
            return f"role label leaks into the turn ({label.group(0).strip()!r})"
        found = self.detector.match(text)
        if found:
            return f"filtered {found}"
        if echo_check and previous and echoes(text, previous, self.echo_threshold):
            return "the user echoes the assistant's last turn"
        return None


def echoes(text: str, previous: str, threshold: float) -> bool:
    """`text` repeats `previous`: the same words, or most of its 3-word windows copied from it."""
    if normalise(text) == normalise(previous):
        return True
    mine, theirs = shingles(text), shingles(previous)
    if len(mine) < 3:
        return False
    return jaccard(mine, theirs) >= threshold or containment(mine, theirs) >= max(threshold, 0.8)
