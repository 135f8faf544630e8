"""Similarity measures for system prompts and turns: near-duplicate prompts within a batch, echoed turns.

Text identity is `gen.text.normalise` (re-exported here for the turn filters); near-duplicate prompts are
measured as the job-wide index measures them (`gen.neardup.similarity`: character 3-gram Jaccard of the
identity form, default threshold `gen.neardup.DEFAULT_THRESHOLD`, chosen on a labelled set), exactly, over the
seeds and the batch in hand. Word windows (`shingles`) are what the echo test of a user turn compares.
"""
from __future__ import annotations

from gen.neardup import similarity
from gen.text import normalise, text_key as _text_key, words


def text_key(prefix: str, text: str) -> str:
    """`prefix` + a hash of the text's identity form."""
    return _text_key(text, prefix)


def shingles(text: str, n: int = 3) -> frozenset[tuple[str, ...]]:
    """The set of n-word windows of the text's words (the whole text when it is shorter than n words)."""
    tokens = words(text)
    if len(tokens) < n:
        return frozenset([tuple(tokens)]) if tokens else frozenset()
    return frozenset(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def containment(part: frozenset, whole: frozenset) -> float:
    """How much of `part` is found in `whole` (1.0: all of it)."""
    if not part:
        return 0.0
    return len(part & whole) / len(part)


class NearDuplicates:
    """Texts seen so far; `near(text)` says whether a new text is within `threshold` of one of them
    (`gen.neardup.similarity`, exact)."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self._seen: list[str] = []
        self._keys: set[str] = set()

    def add(self, text: str) -> None:
        self._keys.add(normalise(text))
        self._seen.append(text)

    def near(self, text: str) -> float | None:
        """The similarity to the closest text seen when it reaches the threshold (1.0 for an exact copy)."""
        if normalise(text) in self._keys:
            return 1.0
        best = max((similarity(text, other) for other in self._seen), default=0.0)
        return best if best >= self.threshold else None


__all__ = ["normalise", "text_key", "shingles", "jaccard", "containment", "NearDuplicates"]
