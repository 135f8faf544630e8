"""Turn filters: what makes a simulated user's or an assistant's turn unusable, as a reason string.

They run as the teacher's `check`, so a refused turn is asked for again (`run.output_attempts`) before the
conversation is given up.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from gen.instructors.systemchat.similarity import containment, jaccard, normalise, shingles

# AI disclaimers and policy refusals, matched case-insensitively anywhere in a turn. Plain refusals
# ("I'm sorry, I can't discuss that") are NOT here: guardrail system prompts make them the right answer.
DEFAULT_FILTER_PHRASES = (
    "as an ai", "as a language model", "as a large language model", "i am an ai", "i'm an ai",
    "i am just an ai", "i'm just an ai", "openai", "chatgpt", "my training data", "my knowledge cutoff",
    "i cannot fulfill", "i can't fulfill", "i'm unable to fulfill", "against my programming",
    "content policy", "i don't have personal opinions", "i do not have personal opinions",
)

# A line opening with a speaker label, or a chat-template token: another turn leaking into this one.
ROLE_LABEL_RE = re.compile(
    r"(?im)^[\s>*#_\[]*(user|assistant|human|gpt|system|ai)\s*[\]*_]*\s*:"
    r"|<\|im_(start|end)\|>|\[/?INST\]|<\|(user|assistant|system)\|>|<</?SYS>>"
)


class TurnFilter:
    def __init__(self, phrases: Iterable[str] = DEFAULT_FILTER_PHRASES, *, echo_threshold: float = 0.6):
        self.phrases = tuple(dict.fromkeys(p.lower().replace("\u2019", "'") for p in phrases if p.strip()))
        self.echo_threshold = echo_threshold

    def phrase(self, text: str) -> str | None:
        lowered = text.lower().replace("\u2019", "'")
        return next((p for p in self.phrases if p in lowered), None)

    def problem(self, text: str, *, previous: str | None = None, echo_check: bool = False) -> str | None:
        """Why `text` cannot be a turn, or None. `previous` is the other side's last turn (for the echo test)."""
        if not text.strip():
            return "empty turn"
        label = ROLE_LABEL_RE.search(text)
        if label:
            return f"role label leaks into the turn ({label.group(0).strip()!r})"
        phrase = self.phrase(text)
        if phrase:
            return f"filtered phrase {phrase!r}"
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
