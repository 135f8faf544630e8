"""Text identity: the one `normalise` every exact-duplicate key in gen uses, and the words it is made of.

`normalise(text)` is NFKC (full-width letters, ligatures, non-breaking spaces and other compatibility forms
become their plain forms), then casefold, then apostrophes inside words dropped ("can't" and "cant", "can’t"
are the same word) and every other punctuation mark, symbol or run of them (em dash, ellipsis, hyphen runs,
quotes, slashes) a word boundary, then spaces collapsed. Two texts with the same normal form are the same
text for gen: same record key, an exact duplicate. Letters keep their accents (résumé is not resume).

`words(text)` is the normal form split into words: what near-duplicate measures compare.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata

_APOSTROPHE_RE = re.compile(r"(?<=\w)['\u2019\u02bc](?=\w)")
_BOUNDARY_RE = re.compile(r"[\W_]+")


def normalise(text: str) -> str:
    """The identity form of a text: NFKC, casefolded, punctuation as word boundaries, single spaces."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_BOUNDARY_RE.split(_APOSTROPHE_RE.sub("", folded))).strip()


def words(text: str) -> list[str]:
    """The words of the text's identity form."""
    return normalise(text).split()


def text_key(text: str, prefix: str = "") -> str:
    """A short stable key for the text's identity form (sha256), optionally prefixed."""
    return prefix + hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()[:32]


__all__ = ["normalise", "words", "text_key"]
