"""Mechanical constraints code can verify on an assistant reply, named by a short id.

A system prompt may carry one or more of them (`constraint: all_caps`, `constraint: {word_count: 10}`,
`constraint: [all_caps, {no_letter: e}]`). Each is checked on every assistant turn; a violation is a fact, not
an opinion, so it rejects a conversation whatever the judge scored.

| id | passes when the reply... |
|---|---|
| `no_letter: X` | never contains the letter X (either case) |
| `all_caps` | has letters and none of them lower case |
| `all_lowercase` | has letters and none of them upper case |
| `word_count: N` | has exactly N words |
| `max_words: N` | has at most N words |
| `ends_with_question` | ends with a question mark (closing quotes/brackets allowed after it) |
| `json_only` | is one JSON object or array and nothing else (a ```json fence around it is tolerated) |
| `only_words: a,b` | uses no word outside the list (case-insensitive), e.g. a cat that only meows |
| `starts_with: TEXT` | starts with TEXT (case-sensitive, after leading spaces) |
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

WORD_RE = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")
FENCE_RE = re.compile(r"^```(?:json)?\s*\n(.*)\n```$", re.DOTALL | re.IGNORECASE)


def words(text: str) -> list[str]:
    """Words as a reader counts them: runs of letters/digits, with inner apostrophes and hyphens."""
    return WORD_RE.findall(text)


def _no_letter(text: str, arg: str) -> str | None:
    found = [c for c in text if c.lower() == arg.lower()]
    return f"contains the letter '{arg}' {len(found)} time(s)" if found else None


def _all_caps(text: str, _arg: str) -> str | None:
    if not any(c.isalpha() for c in text):
        return "has no letters"
    lower = sum(1 for c in text if c.islower())
    return f"has {lower} lower-case letter(s)" if lower else None


def _all_lowercase(text: str, _arg: str) -> str | None:
    if not any(c.isalpha() for c in text):
        return "has no letters"
    upper = sum(1 for c in text if c.isupper())
    return f"has {upper} upper-case letter(s)" if upper else None


def _word_count(text: str, arg: str) -> str | None:
    n = len(words(text))
    return None if n == int(arg) else f"has {n} words, not {arg}"


def _max_words(text: str, arg: str) -> str | None:
    n = len(words(text))
    return None if n <= int(arg) else f"has {n} words, more than {arg}"


def _ends_with_question(text: str, _arg: str) -> str | None:
    stripped = text.rstrip().rstrip("\"'\u201d\u2019)]*_ ")
    return None if stripped.endswith("?") else "does not end with a question mark"


def _json_only(text: str, _arg: str) -> str | None:
    body = text.strip()
    fenced = FENCE_RE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        value = json.loads(body)
    except ValueError:
        return "is not JSON alone"
    return None if isinstance(value, (dict, list)) else "is JSON but not an object or array"


def _only_words(text: str, arg: str) -> str | None:
    allowed = {w.strip().lower() for w in arg.split(",") if w.strip()}
    found = words(text)
    if not found:
        return "has no words"
    other = sorted({w.lower() for w in found} - allowed)
    return f"uses words outside {sorted(allowed)}: {', '.join(other[:5])}" if other else None


def _starts_with(text: str, arg: str) -> str | None:
    return None if text.lstrip().startswith(arg) else f"does not start with {arg!r}"


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
}


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
    if isinstance(value, list) and kind == "words":
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
