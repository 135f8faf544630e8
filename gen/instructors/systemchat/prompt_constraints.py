"""Checkable constraints read from a system prompt's own words, for conversations that carry no constraint ids.

Records made by `systemchat` keep their constraint ids in meta; a conversation from a JSONL file, or an earlier
job that never had ids, only has its system prompt. `constraints_in_prompt` finds the rules stated in plain,
unambiguous words ("answer in exactly ten words", "never use the letter 'e'", "in capital letters only",
"twenty words or fewer", "never use exclamation marks", "reply only with JSON", "end with a question mark",
"address the user as \"Captain\"", "exactly two sentences"). It is deliberately conservative: a rule said any
other way is left to the judge, and a prompt that only mentions a word count in passing adds nothing.
"""
from __future__ import annotations

import re

from gen.instructors.systemchat.constraints import Constraint, parse_constraint

NUMBERS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve "
                                      "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split())}
NUMBERS.update({"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
                "hundred": 100, "a hundred": 100, "one hundred": 100})
_N = r"(\d{1,4}|" + "|".join(sorted(NUMBERS, key=len, reverse=True)) + ")"
_QUOTED = r"[\"\u201c'][A-Za-z]+[\"\u201d'](?:\s*,?\s*(?:and|or)?\s*[\"\u201c'][A-Za-z]+[\"\u201d'])*"
_REPLY = r"(?:every\s+|each\s+|your\s+|all\s+)?(?:repl(?:y|ies)|answers?|responses?|messages?)"

# (pattern, constraint name, how the argument is made from the match; None: no argument)
RULES: list[tuple[str, str, str | None]] = [
    (rf"\bexactly\s+{_N}[\s-]+words?\b", "word_count", "n"),
    (rf"\b(?:at\s+most|no\s+more\s+than|up\s+to|a\s+maximum\s+of|not\s+(?:to\s+)?exceed(?:ing)?)\s+{_N}\s+words\b",
     "max_words", "n"),
    (rf"\b{_N}\s+words\s+or\s+(?:fewer|less)\b", "max_words", "n"),
    (rf"\b(?:under|below)\s+{_N}\s+words\b", "max_words", "n"),
    (rf"\b(?:fewer|less)\s+than\s+{_N}\s+words\b", "max_words", "n-1"),
    (rf"\b(?:in|of|with)\s+exactly\s+{_N}\s+sentences?\b|\bexactly\s+{_N}\s+sentences?\s+(?:long|per|in)\b",
     "sentence_count", "n"),
    (rf"\b(?:at\s+most|no\s+more\s+than|up\s+to)\s+{_N}\s+sentences?\b", "max_sentences", "n"),
    (r"\b(?:never|not|don't|do\s+not|must\s+not|cannot|can't|without)\s+(?:use|using|type|typing|write|writing|"
     r"contain(?:ing)?)?\s*(?:the\s+)?letter\s+['\"\u2018\u201c]?([A-Za-z])\b", "no_letter", "letter"),
    (r"\b(?:entirely|only|always|all)\s+in\s+(?:capital\s+letters|capitals|upper[\s-]?case)\b|"
     r"\bin\s+(?:capital\s+letters|capitals|upper[\s-]?case)\s+only\b|\ball\s+caps\b", "all_caps", None),
    (r"\b(?:entirely|only|always|all)\s+in\s+lower[\s-]?case\b|\bin\s+lower[\s-]?case\s+only\b", "all_lowercase",
     None),
    (r"\b(?:never\s+use|no|without|do\s+not\s+use|don't\s+use)\s+(?:any\s+|an?\s+)?exclamation\s+marks?\b",
     "no_exclamation", None),
    (rf"\b{_REPLY}\s+must\s+end\s+with\s+a\s+question\s+mark\b|\bphrase\s+{_REPLY}\s+as\s+a\s+question\b",
     "ends_with_question", None),
    (r"\b(?:respond|reply|answer)\s+(?:only\s+)?(?:with|in)\s+(?:valid\s+)?JSON\s+only\b|"
     r"\b(?:respond|reply|answer)\s+only\s+(?:with|in)\s+(?:a\s+)?(?:valid\s+)?JSON\b|\bvalid\s+JSON\s+only\b",
     "json_only", None),
    (rf"\baddress\s+the\s+user\s+as\s+({_QUOTED})", "address_as", "quoted"),
    (rf"\b(?:solely|only)\s+of\s+the\s+words?\s+({_QUOTED})|\bcan\s+only\s+say\s+({_QUOTED})", "only_words",
     "quoted"),
    (r"\b(?:start|begin)\s+every\s+(?:reply|answer|response)\s+with\s+(?:a\s+(?:single\s+)?line\s+"
     r"beginning\s+)?[\"\u201c]([^\"\u201d\n]{1,20})[\"\u201d]", "starts_with", "text"),
    (r"\b(?:as|with|in)\s+(?:a\s+)?(?:Markdown\s+)?bullet(?:ed)?\s+list\b", "bullets_only", None),
    (rf"\b(?:at\s+most|no\s+more\s+than|up\s+to)\s+{_N}\s+bullet(?:\s+point)?s?\b", "max_bullets", "n"),
    (r"\bacrostic\b.{0,80}?\bspell(?:s|ing)?\s+(?:out\s+)?(?:the\s+word\s+)?[\"\u201c']?([A-Za-z]{2,})\b", "acrostic",
     "text"),
    (r"\bno\s+punctuation\s+(?:except|but|other\s+than)\s+(?:full\s+stops|periods)\b", "allowed_punctuation",
     "full stop"),
]
_COMPILED = [(re.compile(p, re.IGNORECASE), name, arg) for p, name, arg in RULES]


def _number(text: str) -> int:
    text = text.lower()
    return int(text) if text.isdigit() else NUMBERS[text]


def constraints_in_prompt(prompt: str | None) -> list[Constraint]:
    """The checkable constraints the prompt states in the words `RULES` know, each once, in RULES order."""
    if not prompt:
        return []
    found: dict[str, Constraint] = {}
    for pattern, name, kind in _COMPILED:
        match = pattern.search(prompt)
        if not match or name in found:
            continue
        value = next((g for g in match.groups() if g), None)
        if kind in ("n", "n-1"):
            n = _number(value or "0") - (1 if kind == "n-1" else 0)
            if n < 1:
                continue
            spec: object = {name: n}
        elif kind is None:
            spec = name
        elif kind == "quoted":
            spec = {name: re.findall(r"[\"\u201c']([A-Za-z]+)[\"\u201d']", value or "")}
        elif kind == "full stop":
            spec = {name: "."}
        else:
            spec = {name: value}
        try:
            found[name] = parse_constraint(spec)
        except ValueError:
            continue
    return list(found.values())
