"""The two shapes of a coding answer, and the checks that hold a reply to them.

normal       an explanation and the code in a fenced block tagged with the task's language (```python).
PLAINFORMAT  the stored instruction is the task followed by " PLAINFORMAT" (once), and the answer is only the
             code: no fence, no sentence before it, no sentence after it. A reply that breaks this is refused
             (and asked again); a fence is never stripped to make a reply pass.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from gen.codecheck import canonical_language, fence_tag
from gen.instructors.coding.prose import first_prose_line

PLAIN_MARK = "PLAINFORMAT"

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([^\s`]*)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.M | re.S)
_ANY_FENCE = re.compile(r"```|^[ \t]*~~~", re.M)

# How an answer's first or last line reads when it is talk about the code rather than code.
_OPENERS = re.compile(
    r"^(?:here(?:'s|’s|\s+is|\s+are)\b|sure\b|certainly\b|of course\b|absolutely\b|below\b|above\b|"
    r"the (?:following|code|script|program|function|above|below|implementation)\b|following\b|"
    r"this (?:code|script|program|function|solution|implementation|example|snippet|class|module|version|will|"
    r"is|should|creates|uses|reads|defines|approach)\b|that's\b|note\b|explanation\b|"
    r"i (?:have|hope|wrote|used|am|'ve)\b|i'm\b|let me\b|let's\b|in this\b|you can\b|"
    r"to (?:run|use|compile|execute|test|install)\b|make sure\b|okay\b|ok\b|great\b|hope\b|feel free\b|"
    r"example usage\b|usage:|output:|save (?:this|the|it)\b|run (?:it|this|the)\b|first,|finally,)",
    re.I)
_CODE_CHARS = set("=;{}[]<>$|&\\@")
_PLAIN_PROSE_FORBIDDEN = _CODE_CHARS | set("()#*`\"/")
_COMMENT_STARTS = ("#", "//", "/*", "*", "--", "<!--", "'''", '"""', ";", "%", "rem ", "REM ")


@dataclass(frozen=True)
class CodeBlock:
    tag: str
    code: str


def code_blocks(text: str) -> list[CodeBlock]:
    return [CodeBlock(m.group(2).strip().lower(), m.group(3)) for m in _FENCE.finditer(text)]


def blocks_in_language(text: str, language: str) -> list[CodeBlock]:
    """The fenced blocks tagged with the language; untagged blocks when none is tagged."""
    lang = canonical_language(language)
    blocks = code_blocks(text)
    tagged = [b for b in blocks if b.tag and canonical_language(b.tag) == lang]
    return tagged or [b for b in blocks if not b.tag]


def without_mark(task: str) -> str:
    """The task with any PLAINFORMAT the teacher wrote into it removed."""
    return re.sub(rf"[ \t]*\b{PLAIN_MARK}\b", "", task).strip()


def plain_instruction(task: str) -> str:
    """The task as a PLAINFORMAT instruction: " PLAINFORMAT" exactly once, at the end."""
    return f"{without_mark(task)} {PLAIN_MARK}"


def is_prose(line: str) -> bool:
    """A line of talk (an intro or a closing sentence), as opposed to code or a code comment."""
    s = line.strip()
    if not s:
        return False
    if s.startswith("**") and len(s) > 2 and s[2].isalpha():
        return True  # **Explanation:**
    if s.startswith(_COMMENT_STARTS):
        return False
    if _OPENERS.match(s) and not (set(s) & _CODE_CHARS) and not re.search(r"\w\(", s) \
            and not s.endswith((")", ";", "{", ",")):
        return True
    words = re.findall(r"[A-Za-z][A-Za-z'’-]*", s)
    return (s[0].isupper() and len(words) >= 5 and s[-1] in ".:!?" and not (set(s) & _PLAIN_PROSE_FORBIDDEN))


def plainformat_problem(text: str, language: str | None = None) -> str | None:
    """Why a reply is not only code, or None: a fence, a lead-in or closing line of talk, or any line of code
    that reads as an English sentence (`prose.first_prose_line`, language-aware when `language` is given)."""
    if _ANY_FENCE.search(text):
        return "PLAINFORMAT answer must be only code, but it has a ``` code fence"
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return "PLAINFORMAT answer is empty"
    if is_prose(lines[0]):
        return f"PLAINFORMAT answer must be only code, but it opens with prose: {lines[0].strip()[:120]!r}"
    if is_prose(lines[-1]):
        return f"PLAINFORMAT answer must be only code, but it ends with prose: {lines[-1].strip()[:120]!r}"
    prose = first_prose_line(text, canonical_language(language) if language else "")
    if prose:
        return f"PLAINFORMAT answer must be only code, but line {prose[0]} is prose: {prose[1][:120]!r}"
    return None


def normal_problem(text: str, language: str) -> str | None:
    """Why a reply is not an explanation with a fenced code block in the language, or None."""
    tag = fence_tag(language)
    blocks = code_blocks(text)
    if not blocks:
        return f"the answer has no fenced code block (```{tag} ... ```)"
    if not blocks_in_language(text, language):
        found = ", ".join(sorted({b.tag or "untagged" for b in blocks}))
        return f"the answer has no ```{tag} code block (found: {found})"
    outside = _FENCE.sub("", text)
    if len(re.findall(r"[A-Za-z]{2,}", outside)) < 4:
        return "the answer has no explanation outside its code block"
    return None


def normal_request(task: str, language: str) -> str:
    tag = fence_tag(language)
    return (f"{task}\n\nExplain your approach briefly, then give the complete {language} code in one fenced code "
            f"block (```{tag}). The code must be complete and syntactically valid.")


def plain_request(task: str, language: str) -> str:
    return (f"{task}\n\nReply with only the complete {language} source code. No markdown code fences, no "
            "sentence before or after the code, no explanation; comments inside the code are fine. The code must "
            "be complete and syntactically valid.")
