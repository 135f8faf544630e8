"""Mechanical constraints code can verify on an assistant reply, named by a short id.

A system prompt may carry one or more of them (`constraint: all_caps`, `constraint: {word_count: 10}`,
`constraint: [all_caps, {no_letter: e}]`). Each is checked on every assistant turn; a violation is a fact, not
an opinion, so it rejects a conversation whatever the judge scored. Replies are read as `tokens` describes:
NFKC first (full-width `？` is `?`), letters folded for letter rules (`é`, `ë`, `Ｅ` are `e`), and a word
count in which numbers ("3.50", "1,000"), abbreviations ("U.S.", "e.g."), URLs, e-mails, hyphenated words
and contractions are one word each.

| id | passes when the reply... |
|---|---|
| `no_letter: X` | never contains the letter X, in any case, accented or full-width (é, ë, Ｅ count as e) |
| `all_caps` | has no lower-case letter (digits or punctuation alone pass) |
| `all_lowercase` | has no upper-case letter |
| `word_count: N` | has exactly N words |
| `max_words: N` | has at most N words |
| `sentence_count: N` | has exactly N sentences |
| `max_sentences: N` | has at most N sentences |
| `ends_with_question` | ends with `?` or `？` (closing quotes/brackets allowed after it) |
| `json_only` | is one strict JSON object or array and nothing else: no NaN/Infinity, no duplicate keys, no text after it (a ```json fence around it is tolerated) |
| `only_words: a,b` | uses no word outside the list (case-insensitive), e.g. a cat that only meows |
| `starts_with: TEXT` | starts with TEXT (case-sensitive, after leading spaces) |
| `no_exclamation` | has no exclamation mark (`!`, `！`, `¡`) |
| `address_as: a,b` | addresses the user by one of the names, as a whole word, e.g. `Captain` or `sir,madam` |
| `bullets_only` | is a Markdown bullet list and nothing else (`-`, `*`, `+` or `•` items; indented lines continue one) |
| `max_bullets: N` | has at most N bullet items |
| `allowed_punctuation: CHARS` | uses no punctuation but CHARS (an apostrophe inside a word is part of the word) |
| `acrostic: WORD` | has one line per letter of WORD, each starting with that letter |
"""
from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gen.instructors.systemchat.tokens import fold, nfkc, sentences, words

FENCE_RE = re.compile(r"^```(?:json)?\s*\n(.*)\n```$", re.DOTALL | re.IGNORECASE)
BULLET_RE = re.compile(r"^[-*+\u2022]\s+\S")
CLOSERS = "\"'\u201d\u2019\u00bb)]}*_` "
EXCLAMATIONS = "!\u00a1\u2757\u2755"

__all__ = ["Constraint", "CHECKS", "LIMITS_LENGTH_OR_FORM", "parse_constraint", "parse_constraints",
           "constraint_problems", "words", "sentences"]


def _no_letter(text: str, arg: str) -> str | None:
    letter = fold(arg)
    found = fold(text).count(letter)
    return f"contains the letter '{arg}' {found} time(s)" if found else None


def _all_caps(text: str, _arg: str) -> str | None:
    if not text.strip():
        return "is empty"
    lower = sum(1 for c in nfkc(text) if c.islower())
    return f"has {lower} lower-case letter(s)" if lower else None


def _all_lowercase(text: str, _arg: str) -> str | None:
    if not text.strip():
        return "is empty"
    upper = sum(1 for c in nfkc(text) if c.isupper() or unicodedata.category(c) == "Lt")
    return f"has {upper} upper-case letter(s)" if upper else None


def _word_count(text: str, arg: str) -> str | None:
    n = len(words(text))
    return None if n == int(arg) else f"has {n} words, not {arg}"


def _max_words(text: str, arg: str) -> str | None:
    n = len(words(text))
    return None if n <= int(arg) else f"has {n} words, more than {arg}"


def _sentence_count(text: str, arg: str) -> str | None:
    n = len(sentences(text))
    return None if n == int(arg) else f"has {n} sentences, not {arg}"


def _max_sentences(text: str, arg: str) -> str | None:
    n = len(sentences(text))
    return None if n <= int(arg) else f"has {n} sentences, more than {arg}"


def _ends_with_question(text: str, _arg: str) -> str | None:
    stripped = nfkc(text).rstrip().rstrip(CLOSERS)
    return None if stripped.endswith("?") else "does not end with a question mark"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"duplicate key {repeated[0]!r}")
    return dict(pairs)


def _json_only(text: str, _arg: str) -> str | None:
    body = text.strip()
    fenced = FENCE_RE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        value = json.loads(body, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        return f"is not JSON alone ({exc.msg} at character {exc.pos})"
    except ValueError as exc:
        return f"is not strict JSON ({exc})"
    return None if isinstance(value, (dict, list)) else "is JSON but not an object or array"


def _only_words(text: str, arg: str) -> str | None:
    allowed = {fold(w.strip()) for w in arg.split(",") if w.strip()}
    found = words(text)
    if not found:
        return "has no words"
    other = sorted({fold(w) for w in found} - allowed)
    return f"uses words outside {sorted(allowed)}: {', '.join(other[:5])}" if other else None


def _starts_with(text: str, arg: str) -> str | None:
    return None if nfkc(text).lstrip().startswith(nfkc(arg)) else f"does not start with {arg!r}"


def _no_exclamation(text: str, _arg: str) -> str | None:
    found = sum(1 for c in nfkc(text) if c in EXCLAMATIONS)
    return f"has {found} exclamation mark(s)" if found else None


def _address_as(text: str, arg: str) -> str | None:
    names = [n.strip() for n in arg.split(",") if n.strip()]
    folded = fold(text)
    for name in names:
        if re.search(rf"(?<![^\W_]){re.escape(fold(name))}(?![^\W_])", folded):
            return None
    return f"does not address the user as {' or '.join(repr(n) for n in names)}"


def _bullet_items(text: str) -> tuple[int, str | None]:
    """(number of bullet items, the first line that is neither a bullet nor indented under one)."""
    items, stray = 0, None
    for line in nfkc(text).splitlines():
        if not line.strip():
            continue
        if BULLET_RE.match(line.lstrip()) and (not items or not line[:1].isspace() or BULLET_RE.match(line)):
            items += 1
        elif items and line[:1].isspace():
            continue  # a continuation or a nested item
        elif stray is None:
            stray = line.strip()
    return items, stray


def _bullets_only(text: str, _arg: str) -> str | None:
    items, stray = _bullet_items(text)
    if stray is not None:
        return f"has a line that is not a bullet item: {stray[:60]!r}"
    return None if items else "has no bullet items"


def _max_bullets(text: str, arg: str) -> str | None:
    items, _ = _bullet_items(text)
    return None if items <= int(arg) else f"has {items} bullet items, more than {arg}"


def _allowed_punctuation(text: str, arg: str) -> str | None:
    text = re.sub(r"(?<=[^\W_])['\u2019](?=[^\W_])", "", nfkc(text))  # contractions: part of the word
    found = sorted({c for c in text if unicodedata.category(c).startswith("P") and c not in arg})
    return f"uses punctuation other than {arg!r}: {' '.join(found[:8])}" if found else None


def _acrostic(text: str, arg: str) -> str | None:
    firsts = []
    for line in text.splitlines():
        letter = next((c for c in fold(line) if c.isalpha()), None)
        if letter:
            firsts.append(letter)
    spelled = "".join(firsts)
    return None if spelled == fold(arg) else f"its lines spell {spelled.upper()!r}, not {arg.upper()!r}"


# id -> (check, argument kind: None | "letter" | "int" | "words" | "text")
CHECKS: dict[str, tuple[Callable[[str, str], str | None], str | None]] = {
    "no_letter": (_no_letter, "letter"),
    "all_caps": (_all_caps, None),
    "all_lowercase": (_all_lowercase, None),
    "word_count": (_word_count, "int"),
    "max_words": (_max_words, "int"),
    "ends_with_question": (_ends_with_question, None),
    "json_only": (_json_only, None),
    "only_words": (_only_words, "words"),
    "starts_with": (_starts_with, "text"),
    "sentence_count": (_sentence_count, "int"),
    "max_sentences": (_max_sentences, "int"),
    "no_exclamation": (_no_exclamation, None),
    "address_as": (_address_as, "names"),
    "bullets_only": (_bullets_only, None),
    "max_bullets": (_max_bullets, "int"),
    "allowed_punctuation": (_allowed_punctuation, "text"),
    "acrostic": (_acrostic, "word"),
}

# Constraints on a reply's length or form: a reroll asked to be "longer, more detailed" works against them.
LIMITS_LENGTH_OR_FORM = frozenset({"word_count", "max_words", "sentence_count", "max_sentences", "json_only",
                                   "only_words", "bullets_only", "max_bullets", "acrostic"})


@dataclass(frozen=True)
class Constraint:
    name: str
    arg: str = ""

    @property
    def id(self) -> str:
        """The canonical form, e.g. `no_letter:e`, `word_count:10`, `all_caps`."""
        return f"{self.name}:{self.arg}" if self.arg else self.name

    def check(self, text: str) -> str | None:
        """None when `text` conforms, else what is wrong with it."""
        return CHECKS[self.name][0](text, self.arg)


def _argument(name: str, kind: str | None, value: Any) -> str:
    if kind is None:
        if value not in (None, "", True):
            raise ValueError(f"constraint '{name}' takes no argument")
        return ""
    if isinstance(value, list) and kind in ("words", "names"):
        value = ",".join(str(v) for v in value)
    if value is None or isinstance(value, (bool, dict, list)):
        raise ValueError(f"constraint '{name}' needs an argument")
    text = str(value).strip()
    if kind == "letter" and not (len(text) == 1 and text.isalpha()):
        raise ValueError(f"constraint '{name}' needs one letter, got {value!r}")
    if kind == "int":
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"constraint '{name}' needs a whole number >= 1, got {value!r}")
        text = str(int(text))
    if kind == "words":
        text = ",".join(w.strip().lower() for w in text.split(",") if w.strip())
    if kind == "names":
        text = ",".join(w.strip() for w in text.split(",") if w.strip())
    if kind == "word" and not text.isalpha():
        raise ValueError(f"constraint '{name}' needs one word of letters, got {value!r}")
    if not text:
        raise ValueError(f"constraint '{name}' needs an argument")
    return text.lower() if kind == "letter" else text


def parse_constraint(spec: Any) -> Constraint:
    """One constraint from `"all_caps"`, `"no_letter:e"`, `"word_count: 10"` or `{"no_letter": "e"}`."""
    if isinstance(spec, dict):
        if len(spec) != 1:
            raise ValueError(f"a constraint mapping has one key, got {sorted(spec)}")
        (name, value), = spec.items()
    elif isinstance(spec, str):
        name, _, value = spec.partition(":")
        value = value.strip() or None
    else:
        raise ValueError(f"a constraint is a string or a one-key mapping, got {spec!r}")
    name = str(name).strip().lower()
    if name not in CHECKS:
        raise ValueError(f"unknown constraint '{name}' (known: {', '.join(CHECKS)})")
    return Constraint(name, _argument(name, CHECKS[name][1], value))


def parse_constraints(spec: Any) -> list[Constraint]:
    """None, one constraint, or a list of them; raises ValueError naming the first bad one."""
    if spec is None or spec == "" or spec == []:
        return []
    items = spec if isinstance(spec, list) else [spec]
    return [parse_constraint(item) for item in items]


def constraint_problems(constraints: list[Constraint], text: str) -> list[str]:
    """`id: what is wrong` for every constraint the text breaks."""
    problems = []
    for c in constraints:
        problem = c.check(text)
        if problem:
            problems.append(f"{c.id}: {problem}")
    return problems
