"""Which programming language a piece of code is written in, from syntax markers only (nothing is run).

Each language has markers: patterns that (almost) only its code contains, each with a weight (3: decisive,
such as `std::` or `#include <iostream>` for C++, `console.log(` for JavaScript; 1: suggestive). Comments and
string literals are blanked out first, so a Python comment that mentions `std::vector` is not C++.

`wrong_language(expected, code)` names the language the code is written in when it is clearly another one:
its markers weigh at least 3, and at least twice what the expected language's own markers weigh. Languages
that contain one another are not "wrong": C in a C++ answer, JavaScript in a TypeScript answer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# canonical id (as gen.codecheck names them) -> (weight, pattern, what it is)
MARKERS: dict[str, list[tuple[int, str, str]]] = {
    "cpp": [
        (3, r"#\s*include\s*<(?:iostream|vector|string|map|unordered_map|set|algorithm|memory|fstream|sstream|"
            r"iomanip|thread|mutex|optional|array|deque|queue|stack|list|functional|chrono|utility|numeric|"
            r"c(?:stdio|stdlib|string|math|stdint|ctype|assert|time))>", "a C++ standard header"),
        (3, r"\bstd::", "std::"), (3, r"\busing\s+namespace\b", "using namespace"),
        (3, r"\btemplate\s*<", "template<"), (2, r"\bclass\s+\w+\s*(?::\s*(?:public|private)\b|\{)", "a class"),
        (3, r"\b(?:cout|cerr)\s*<<|\bcin\s*>>", "iostream operators"), (2, r"\bnullptr\b", "nullptr"),
        (2, r"\bnamespace\s+\w+\s*\{", "a namespace"), (1, r"\bauto\s+\w+\s*=", "auto"),
        (2, r"\bnew\s+\w+(?:<[^>]*>)?\s*[\[(]", "new"), (2, r"\w&\s+\w+\s*[,)=]|\bconst\s+\w+&", "references"),
    ],
    "c": [
        (1, r"#\s*include\s*<\w+\.h>", "a .h header"), (1, r"\bprintf\s*\(", "printf"),
        (1, r"\bmalloc\s*\(", "malloc"), (1, r"\bint\s+main\s*\(\s*(?:void)?\s*\)", "int main"),
    ],
    "python": [
        (3, r"^\s*def\s+\w+\s*\(.*\)\s*(?:->\s*[^:]+)?:\s*$", "def ...:"),
        (3, r"^\s*from\s+[\w.]+\s+import\s+\w", "from ... import"),
        (3, r"if\s+__name__\s*==\s*['\"]__main__['\"]", "if __name__ == '__main__'"),
        (2, r"^\s*elif\b.*:\s*$", "elif"), (2, r"^\s*import\s+\w+(?:\s+as\s+\w+)?\s*$", "import x"),
        (1, r"\bself\.\w", "self."), (2, r"^\s*(?:for|while|if|with)\b[^{;]*:\s*$", "a block opened by ':'"),
    ],
    "javascript": [
        (3, r"\bconsole\.(?:log|error|warn)\s*\(", "console.log"), (3, r"\brequire\s*\(\s*['\"]", "require()"),
        (3, r"\bmodule\.exports\b", "module.exports"), (2, r"^\s*(?:const|let)\s+\w+\s*=", "const/let"),
        (2, r"\bfunction\s*\w*\s*\([^)]*\)\s*\{", "function ... {"), (2, r"=>\s*[{(\w]", "=>"),
        (1, r"===|!==", "==="), (2, r"\bdocument\.\w|\bwindow\.\w", "the DOM"),
    ],
    "typescript": [
        (3, r"^\s*(?:export\s+)?interface\s+\w+\s*(?:<[^>]*>)?\s*\{", "an interface"),
        (3, r"^\s*(?:export\s+)?type\s+\w+\s*(?:<[^>]*>)?\s*=", "a type alias"),
        (3, r"\(\s*\w+\s*\??:\s*(?:string|number|boolean|any|unknown|\w+\[\])\b", "typed parameters"),
        (3, r"\)\s*:\s*(?:string|number|boolean|void|Promise<|any|never)\b", "a return type"),
        (2, r"\b(?:const|let)\s+\w+\s*:\s*\w+", "a typed variable"), (2, r"\bas\s+const\b", "as const"),
    ],
    "java": [
        (3, r"\bpublic\s+static\s+void\s+main\s*\(", "public static void main"),
        (3, r"\bSystem\.(?:out|err)\.print", "System.out"), (3, r"^\s*import\s+java\.", "import java."),
        (2, r"\bpublic\s+(?:final\s+)?class\s+\w+", "public class"),
    ],
    "csharp": [
        (3, r"\bConsole\.(?:Write|WriteLine|ReadLine)\s*\(", "Console.WriteLine"),
        (3, r"^\s*using\s+System(?:\.\w+)*\s*;", "using System;"), (2, r"\bstatic\s+void\s+Main\s*\(", "Main"),
    ],
    "go": [
        (3, r"^\s*package\s+\w+\s*$", "package"), (3, r"\bfunc\s+(?:\([^)]*\)\s*)?\w+\s*\(", "func"),
        (2, r"\bfmt\.\w+\(", "fmt."), (1, r"\w\s*:=", ":="),
    ],
    "rust": [
        (3, r"\bfn\s+\w+\s*(?:<[^>]*>)?\s*\(", "fn"), (3, r"\blet\s+mut\b", "let mut"),
        (3, r"\bprintln!\s*\(", "println!"), (3, r"^\s*use\s+std::", "use std::"), (2, r"\bimpl\b", "impl"),
    ],
    "ruby": [
        (3, r"^\s*require\s+['\"]\w+['\"]\s*$", "require 'x'"), (2, r"^\s*puts\b", "puts"),
        (2, r"^\s*def\s+\w+[?!]?(?:\s*\([^)]*\))?\s*$", "def without ':'"), (1, r"^\s*end\s*$", "end"),
    ],
    "php": [(3, r"<\?php", "<?php"), (2, r"\$\w+\s*->\w+", "$x->y")],
    "shell": [
        (3, r"^#!\s*/(?:usr/)?bin/(?:env\s+)?(?:ba|z|da)?sh\b", "a shell #! line"),
        (2, r"^\s*(?:fi|done|esac)\s*$", "fi/done/esac"), (2, r"^\s*if\s+\[\[?\s", "if ["),
        (2, r"^\s*for\s+\w+\s+in\b.*;\s*do\b|^\s*do\s*$", "for ... do"), (1, r"\$\{?\w+\}?", "$var"),
        (1, r"^\s*echo\s", "echo"),
    ],
    "sql": [(3, r"^\s*(?:SELECT\s.+\sFROM|INSERT\s+INTO|CREATE\s+TABLE|UPDATE\s+\w+\s+SET|DELETE\s+FROM)\b",
             "an SQL statement")],
}
_COMPILED = {lang: [(w, re.compile(p, re.M), what) for w, p, what in marks] for lang, marks in MARKERS.items()}

NAMES = {"cpp": "C++", "c": "C", "python": "Python", "javascript": "JavaScript", "typescript": "TypeScript",
         "java": "Java", "csharp": "C#", "go": "Go", "rust": "Rust", "ruby": "Ruby", "php": "PHP",
         "shell": "shell script", "sql": "SQL"}

# expected -> languages whose code is also valid in it
CONTAINS = {"cpp": {"c"}, "typescript": {"javascript"}}

_STRINGS = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'')
_BLOCK_COMMENTS = re.compile(r"/\*.*?\*/|\"\"\".*?\"\"\"|'''.*?'''", re.S)
_LINE_COMMENTS = re.compile(r"(?m)(?<![:\w\"'])//.*$|^\s*#(?!\s*(?:include|define|if|pragma|!)).*$")


@dataclass(frozen=True)
class Evidence:
    language: str
    weight: int
    found: tuple[str, ...]


def _blank(code: str) -> str:
    """Code with comments removed and string literals emptied (their quotes kept)."""
    code = _BLOCK_COMMENTS.sub(" ", code)
    code = _STRINGS.sub(lambda m: m.group(0)[0] * 2, code)
    return _LINE_COMMENTS.sub("", code)


def evidence(code: str) -> dict[str, Evidence]:
    """Every language with at least one marker in the code, with the markers' total weight."""
    text = _blank(code)
    found: dict[str, Evidence] = {}
    for lang, marks in _COMPILED.items():
        hits = [(w, what) for w, pattern, what in marks if pattern.search(text)]
        if hits:
            found[lang] = Evidence(lang, sum(w for w, _ in hits), tuple(what for _, what in hits))
    return found


def wrong_language(expected: str, code: str) -> Evidence | None:
    """The language the code clearly is, when that is not `expected` (a canonical id) nor one it contains."""
    if expected not in MARKERS:
        return None
    found = evidence(code)
    own = found[expected].weight if expected in found else 0
    compatible = {expected} | CONTAINS.get(expected, set())
    others = [e for lang, e in found.items() if lang not in compatible and e.weight >= 3 and e.weight >= 2 * own]
    if not others:
        return None
    return max(others, key=lambda e: e.weight)
