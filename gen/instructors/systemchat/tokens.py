"""How the constraint checks read a reply: Unicode normalisation, words, sentences, letters.

Every check first applies NFKC, so full-width and compatibility forms count as what they look like
(`Ｅ` is `E`, `？` is `?`, `ﬁ` is `fi`). Letter rules also fold diacritics and case (`fold`): `é`, `ë`, `Ｅ`
and `E` are all the letter `e`; `æ`/`œ` hold both of their letters, `ø`/`ł`/`đ` their base letter.

Words (`words`), tried in this order at each position; each counts as ONE word:

| kind | examples |
|---|---|
| URL | `https://example.com/a?b=1`, `www.example.org` (a final `.`, `,`, `)` ... is not part of it) |
| e-mail | `ada@example.co.uk` |
| number with separators | `3.50`, `1,000`, `-2.5`, `10:30`, `1,000,000.75` |
| abbreviation | `U.S.`, `e.g.`, `i.e.`, `a.m.` (single letters with dots) and `Mr.`, `Mrs.`, `Dr.`, `Prof.`, `vs.` |
| word | letters/digits with inner apostrophes or hyphens: `don't`, `state-of-the-art`, `COVID-19`, `3rd` |

Everything else (spaces, punctuation, dashes between spaced words, emoji) separates words.

Sentences (`sentences`): a sentence ends at `.`, `!`, `?` or `…` standing between words, so the dots of an
abbreviation, a number, a URL or an e-mail never end one (an abbreviation that really ends a sentence,
"... in the U.S.", then joins it to the next); a last run of words without a full stop is a sentence too.
"""
from __future__ import annotations

import re
import unicodedata

# titles and short forms that never end a sentence (not "etc.", "no.", "co.": those often do)
TITLES = ("mr", "mrs", "ms", "dr", "prof", "sr", "jr", "vs", "approx", "cf", "dept")

_URL = r"(?:https?://|www\.)[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]}]"
_EMAIL = r"[\w.+-]+@[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)+"
_NUMBER = r"[+-]?\d+(?:[.,:]\d+)+%?(?![^\W_])"
_ABBREVIATION = r"(?:[^\W\d_]\.){2,}|(?i:\b(?:" + "|".join(TITLES) + r")\.)"
_WORD = r"[^\W_]+(?:['\u2019\u2010-][^\W_]+)*"
TOKEN_RE = re.compile("|".join(f"(?:{p})" for p in (_URL, _EMAIL, _NUMBER, _ABBREVIATION, _WORD)))
SENTENCE_END_RE = re.compile(r"[.!?\u2026]")

# letters NFKD does not split into base + mark
_LETTER_FOLD = str.maketrans({"æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ħ": "h", "ı": "i",
                              "Æ": "ae", "Œ": "oe", "Ø": "o", "Ł": "l", "Đ": "d", "Ħ": "h"})


def nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def fold(text: str) -> str:
    """NFKC, diacritics removed, special letters split, case folded: the form letter rules compare."""
    decomposed = unicodedata.normalize("NFKD", nfkc(text).translate(_LETTER_FOLD))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def words(text: str) -> list[str]:
    """The reply's words, as the table in this module's docstring counts them."""
    return TOKEN_RE.findall(nfkc(text))


def sentences(text: str) -> list[str]:
    """The reply's sentences: runs of words up to an end mark that stands between words."""
    text = nfkc(text)
    found: list[str] = []
    start = None
    last_end = 0
    for match in TOKEN_RE.finditer(text):
        gap = text[last_end:match.start()]
        if start is not None and SENTENCE_END_RE.search(gap):
            found.append(text[start:last_end + SENTENCE_END_RE.search(gap).end()].strip())
            start = None
        if start is None:
            start = match.start()
        last_end = match.end()
    if start is not None:
        found.append(text[start:].strip())
    return found
