"""Text keys and a simple near-duplicate measure: word-shingle Jaccard."""
from __future__ import annotations

import hashlib
import re

_PUNCT_RE = re.compile(r"[^\w\s]")
_SPACE_RE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Lower case, punctuation dropped, spaces collapsed: the exact-duplicate key of a text."""
    return _SPACE_RE.sub(" ", _PUNCT_RE.sub(" ", text.lower())).strip()


def text_key(prefix: str, text: str) -> str:
    return prefix + hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()[:32]


def shingles(text: str, n: int = 3) -> frozenset[tuple[str, ...]]:
    """The set of n-word windows of the normalised text (the whole text when it is shorter than n words)."""
    tokens = normalise(text).split()
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
    """Texts seen so far; `near(text)` says whether a new text is within `threshold` Jaccard of one of them."""

    def __init__(self, threshold: float, n: int = 3):
        self.threshold = threshold
        self.n = n
        self._seen: list[frozenset] = []
        self._keys: set[str] = set()

    def add(self, text: str) -> None:
        self._keys.add(normalise(text))
        self._seen.append(shingles(text, self.n))

    def near(self, text: str) -> float | None:
        """The similarity to the closest text seen when it reaches the threshold (1.0 for an exact copy)."""
        if normalise(text) in self._keys:
            return 1.0
        mine = shingles(text, self.n)
        best = max((jaccard(mine, other) for other in self._seen), default=0.0)
        return best if best >= self.threshold else None
