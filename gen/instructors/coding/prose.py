"""Finding English prose inside what should be only code, without asking a compiler (`bash -n` accepts prose).

A line reads as a sentence when, after any Markdown list marker, it starts with a capital letter, has at least
four words, carries no code token (`= ; { } [ ] < > $ | & \\ @`, a backtick, `::`, `->`, `=>`, a call such as
`f(`), ends like a sentence (`.`, `!`, `?`, `:`) or runs to eight words or more, and reads like English: at
least two of its words, and at least a quarter of them, are common function words ("the", "this", "and",
"to"...), and most words after the first are lower case (so `SELECT name FROM users ORDER BY name` is not prose).

Lines where English belongs are never looked at: comments (`#`, `//`, `--`, ...), block comments (`/* */`),
Python triple-quoted strings, shell here-documents and JavaScript/TypeScript/Go backtick strings.
"""
from __future__ import annotations

import re
from collections.abc import Iterator

STOPWORDS = frozenset("""
a an the this that these those it its it's is are was were be been being am will would can could should may
might must shall do does did done has have had having of to in on at by for from with without into onto over
under about as and or but if then than so because while when where which who whom whose what how why not no
all any each every some more most other such only own same very just also there here you your yours we our i
me my he she him her they them their one first next after before below above let lets you'll we'll it'll
""".split())

_LIST_MARKER = re.compile(r"^(?:[-*+\u2022]|\d{1,2}[.)])\s+")
_CODE_TOKEN = re.compile(r"[=;{}\[\]<>$|&\\@`]|::|->|=>|\w\(")
_WORD = re.compile(r"[A-Za-z][A-Za-z'\u2019-]*")
_COMMENT_STARTS = ("#", "//", "/*", "*", "--", "<!--", ";", "%", "rem ", "REM ")
HASH_COMMENTS = ("#",)
C_COMMENTS = ("//", "/*", "*", "#")  # `#`: a preprocessor line, or PHP's comment
COMMENTS = {"python": HASH_COMMENTS, "shell": HASH_COMMENTS, "ruby": HASH_COMMENTS, "perl": HASH_COMMENTS,
            "sql": ("--", "#", "/*"), **{lang: C_COMMENTS for lang in (
                "c", "cpp", "java", "javascript", "typescript", "go", "rust", "csharp", "kotlin", "swift", "php")}}
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_]\w*)\1")
BACKTICK_STRINGS = frozenset({"javascript", "typescript", "go"})


def reads_as_sentence(line: str) -> bool:
    """The line (code region already excluded) reads as an English sentence, as the module docstring says."""
    s = _LIST_MARKER.sub("", line.strip())
    if s.startswith("**") and len(s) > 2 and s[2].isalpha():
        return True  # **Explanation:**
    if not s or not s[0].isupper() or _CODE_TOKEN.search(s):
        return False
    words = _WORD.findall(s)
    if len(words) < 4:
        return False
    stop = sum(1 for w in words if w.lower().replace("\u2019", "'") in STOPWORDS)
    lower = sum(1 for w in words[1:] if w[0].islower())
    return (stop >= 2 and stop / len(words) >= 0.25 and lower / (len(words) - 1) >= 0.6
            and (s[-1] in ".!?:" or len(words) >= 8))


def code_lines(code: str, language: str) -> Iterator[tuple[int, str]]:
    """(line number, line) for each line outside comments, docstrings, here-documents and backtick strings."""
    comments = COMMENTS.get(language, _COMMENT_STARTS)
    block_end: str | None = None  # what closes the region we are in: "*/", '"""', "'''", "`" or a heredoc word
    for number, line in enumerate(code.splitlines(), 1):
        stripped = line.strip()
        if block_end is not None:
            if (stripped == block_end) if block_end.isidentifier() else (block_end in line):
                block_end = None
            continue
        if not stripped or stripped.startswith(comments):
            if stripped.startswith("/*") and "*/" not in stripped:
                block_end = "*/"
            continue
        yield number, line
        if language == "python":
            for quote in ('"""', "'''"):
                if line.count(quote) % 2 == 1:
                    block_end = quote
                    break
        elif language == "shell":
            heredoc = _HEREDOC.search(line)
            if heredoc and "<<<" not in line:
                block_end = heredoc.group(2)
        elif language in BACKTICK_STRINGS and line.count("`") % 2 == 1:
            block_end = "`"
        if block_end is None and "/*" in line and "*/" not in line.split("/*", 1)[1]:
            block_end = "*/"


def first_prose_line(code: str, language: str) -> tuple[int, str] | None:
    """The first line of code that reads as an English sentence, with its number."""
    for number, line in code_lines(code, language):
        if reads_as_sentence(line):
            return number, line.strip()
    return None
