"""Simulated answers to coding requests: small, syntactically valid programs in the language asked for.

`code_answer(request, rng)` recognises a request for code (the language named as "the complete X code" or
"the complete X source code", or a ```tag asked for), and answers it the way a real teacher does most of
the time, and now and then not:

* asked for only the code (PLAINFORMAT): the bare code; sometimes (FENCE_WHEN_PLAIN) fenced anyway, or
  (INTRO_WHEN_PLAIN) opened with a sentence, so the PLAINFORMAT checks have something to refuse;
* asked for an explanation and a fenced block: a sentence or two and the code in a ```tag fence;
* sometimes (SYNTAX_ERROR) the code misses its last closing line, so the syntax checkers fail it.

Every choice comes from the `random.Random` given, so a seeded simulator answers the same way every time.
"""
from __future__ import annotations

import random
import re

FENCE_WHEN_PLAIN = 0.3
INTRO_WHEN_PLAIN = 0.1
SYNTAX_ERROR = 0.08

_PLAIN_RE = re.compile(r"\bonly the complete (.+?) source code\b", re.I)
_NORMAL_RE = re.compile(r"\bthe complete (.+?) code in (?:one|a) fenced code block(?: \(```([\w+#.-]*)\))?", re.I)

# language (lower case, as a job names it) -> canonical id used below
_ALIASES = {
    "python": "python", "python3": "python", "py": "python", "javascript": "javascript", "js": "javascript",
    "node.js": "javascript", "typescript": "typescript", "ts": "typescript", "c": "c", "c++": "cpp",
    "cpp": "cpp", "bash": "shell", "shell": "shell", "sh": "shell", "rust": "rust", "go": "go",
    "golang": "go", "java": "java", "ruby": "ruby", "php": "php", "sql": "sql",
}
_TAGS = {"shell": "bash", "cpp": "cpp"}

_VERBS = ("count", "merge", "filter", "parse", "reverse", "collect", "measure", "group", "trim", "sort")
_NOUNS = ("items", "lines", "words", "records", "values", "entries", "tokens", "rows", "names", "scores")


def _names(rng: random.Random) -> tuple[str, str]:
    """(snake_case, camelCase) of one function name."""
    verb, noun = rng.choice(_VERBS), rng.choice(_NOUNS)
    return f"{verb}_{noun}", verb + noun.capitalize()


def _program(language: str, rng: random.Random) -> str:
    snake, camel = _names(rng)
    n = rng.randint(2, 9)
    if language == "python":
        return (f"def {snake}(values):\n    \"\"\"Keep the values above {n}, in order, without repeats.\"\"\"\n"
                f"    seen = []\n    for value in values:\n        if value > {n} and value not in seen:\n"
                f"            seen.append(value)\n    return seen\n\n\nif __name__ == \"__main__\":\n"
                f"    print({snake}([3, {n + 4}, 12, {n + 4}]))\n")
    if language == "javascript":
        return (f"function {camel}(values) {{\n  const seen = new Set();\n  return values.filter((value) => {{\n"
                f"    if (value <= {n} || seen.has(value)) return false;\n    seen.add(value);\n    return true;\n"
                f"  }});\n}}\n\nconsole.log({camel}([3, {n + 4}, 12, {n + 4}]));\n")
    if language == "typescript":
        return (f"export function {camel}(values: number[]): number[] {{\n  const seen = new Set<number>();\n"
                f"  return values.filter((value) => {{\n    if (value <= {n} || seen.has(value)) return false;\n"
                f"    seen.add(value);\n    return true;\n  }});\n}}\n")
    if language == "c":
        return (f"#include <stdio.h>\n\nstatic int {snake}(const int *values, int count) {{\n    int total = 0;\n"
                f"    for (int i = 0; i < count; i++) {{\n        if (values[i] > {n}) {{\n"
                f"            total += values[i];\n        }}\n    }}\n    return total;\n}}\n\n"
                f"int main(void) {{\n    int values[] = {{3, {n + 4}, 12}};\n"
                f"    printf(\"%d\\n\", {snake}(values, 3));\n    return 0;\n}}\n")
    if language == "cpp":
        return (f"#include <iostream>\n#include <vector>\n\nint {snake}(const std::vector<int>& values) {{\n"
                f"    int total = 0;\n    for (int value : values) {{\n        if (value > {n}) total += value;\n"
                f"    }}\n    return total;\n}}\n\nint main() {{\n"
                f"    std::cout << {snake}({{3, {n + 4}, 12}}) << std::endl;\n    return 0;\n}}\n")
    if language == "shell":
        return (f"#!/usr/bin/env bash\nset -euo pipefail\n\n{snake}() {{\n  local dir=\"${{1:-.}}\"\n"
                f"  find \"$dir\" -type f -size +{n}k | sort | head -n 10\n}}\n\n{snake} \"$@\"\n")
    if language == "rust":
        return (f"pub fn {snake}(values: &[i64]) -> Vec<i64> {{\n    let mut seen = Vec::new();\n"
                f"    for &value in values {{\n        if value > {n} && !seen.contains(&value) {{\n"
                f"            seen.push(value);\n        }}\n    }}\n    seen\n}}\n")
    if language == "go":
        return (f"package main\n\nimport \"fmt\"\n\nfunc {camel}(values []int) []int {{\n\tvar seen []int\n"
                f"\tfor _, value := range values {{\n\t\tif value > {n} {{\n\t\t\tseen = append(seen, value)\n"
                f"\t\t}}\n\t}}\n\treturn seen\n}}\n\nfunc main() {{\n\tfmt.Println({camel}([]int{{3, {n + 4}, 12}}))\n}}\n")
    if language == "java":
        return (f"import java.util.ArrayList;\nimport java.util.List;\n\npublic class Main {{\n"
                f"    static List<Integer> {camel}(int[] values) {{\n        List<Integer> seen = new ArrayList<>();\n"
                f"        for (int value : values) {{\n            if (value > {n} && !seen.contains(value)) {{\n"
                f"                seen.add(value);\n            }}\n        }}\n        return seen;\n    }}\n\n"
                f"    public static void main(String[] args) {{\n"
                f"        System.out.println({camel}(new int[] {{3, {n + 4}, 12}}));\n    }}\n}}\n")
    if language == "ruby":
        return f"def {snake}(values)\n  values.select {{ |value| value > {n} }}.uniq\nend\n\nputs {snake}([3, {n + 4}, 12]).inspect\n"
    if language == "php":
        return (f"<?php\n\nfunction {snake}(array $values): array\n{{\n"
                f"    return array_values(array_unique(array_filter($values, fn($v) => $v > {n})));\n}}\n\n"
                f"print_r({snake}([3, {n + 4}, 12]));\n")
    if language == "sql":
        return (f"SELECT customer_id, SUM(amount) AS total\nFROM orders\nGROUP BY customer_id\n"
                f"HAVING SUM(amount) > {n * 100}\nORDER BY total DESC;\n")
    return f"# {snake}: keep the values above {n}\n{snake} = [v for v in [3, {n + 4}, 12] if v > {n}]\n"


def _break(code: str) -> str:
    """The code with a syntax error: its last closing line (`}`, `end`) dropped, or an unclosed call."""
    lines = code.rstrip("\n").split("\n")
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].strip().startswith("}") or lines[i].strip() == "end":
            return "\n".join(lines[:i] + lines[i + 1:]) + "\n"
    return code.rstrip("\n") + "\nprint((\n"


def _language(name: str) -> str:
    key = re.sub(r"\(.*?\)", "", name).strip().lower()
    return _ALIASES.get(key, _ALIASES.get(key.split()[0] if key else "", key))


def code_answer(request: str, rng: random.Random) -> str | None:
    """A simulated answer to a request for code, or None when the request does not ask for code."""
    plain = _PLAIN_RE.search(request)
    normal = None if plain else _NORMAL_RE.search(request)
    if not plain and not normal:
        return None
    language = _language((plain or normal).group(1))
    code = _program(language, rng)
    if rng.random() < SYNTAX_ERROR:
        code = _break(code)
    tag = (normal.group(2) if normal and normal.group(2) else _TAGS.get(language, language))
    if plain:
        draw = rng.random()
        if draw < FENCE_WHEN_PLAIN:
            return f"```{tag}\n{code}```"
        if draw < FENCE_WHEN_PLAIN + INTRO_WHEN_PLAIN:
            return f"Here is the complete program you asked for.\n\n{code}"
        return code
    intro = rng.choice(("The approach is simple: walk the input once and keep what passes the test.",
                        "This keeps the logic in one small function and calls it from the entry point.",
                        "One pass over the input is enough, so the code stays short and easy to check."))
    outro = rng.choice(("It runs in linear time.", "Each step is commented by its names.",
                        "Adjust the threshold to taste."))
    return f"{intro}\n\n```{tag}\n{code}```\n\n{outro}"


_TASK_OPENERS = ("Write a {L} function that", "Create a {L} script that", "Implement a {L} program that",
                 "Build a small {L} command-line tool that", "In {L}, write code that")
_TASK_BODIES = (
    "reads a CSV file of orders and prints the total amount per customer, sorted by total",
    "checks whether a string is a palindrome, ignoring case, spaces and punctuation",
    "counts how often each word occurs in a text file and prints the ten most common words",
    "merges two sorted lists of integers into one sorted list without using a library sort",
    "parses an ISO 8601 date and prints the weekday it falls on",
    "walks a directory tree and reports the five largest files with their sizes in megabytes",
    "implements a stack with push, pop and peek, raising an error when popping an empty stack",
    "fetches a JSON document over HTTP and prints the value of its name field, handling timeouts",
    "removes duplicate lines from a log file while keeping the first occurrence of each",
    "converts a Roman numeral such as MCMXCIV into an integer and rejects invalid numerals",
    "computes a running median of a stream of numbers read from standard input",
    "validates e-mail addresses from a list and prints the invalid ones with the reason",
    "renames every .jpeg file in a folder to .jpg and reports how many files changed",
    "finds the shortest path between two cells of a grid maze given as text, using breadth-first search",
    "splits a large text file into chunks of at most one thousand lines each",
    "implements a least-recently-used cache with a fixed capacity and get and put operations",
    "retries a failing network call up to five times with exponential backoff",
    "flattens a nested list or array of arbitrary depth into a single flat list",
    "reads key=value pairs from a configuration file, ignoring comments and blank lines",
    "prints the Fibonacci numbers below a limit given on the command line",
    "counts the lines of code, comments and blank lines in a source file",
    "checks that brackets, braces and parentheses in an expression are balanced",
    "groups a list of words into anagram families and prints each family on one line",
    "computes the SHA-256 checksum of every file in a directory and writes them to a manifest",
)


def coding_tasks(request: str, n: int, rng: random.Random) -> dict | None:
    """{"tasks": [{"instruction"}]} for a request to write coding tasks in a language, or None."""
    asked = re.search(r"\btasks that a user might give a coding assistant, in (.+?), about (.+?)\.", request)
    if not asked:
        return None
    language = asked.group(1)
    software = re.search(r"must involve (\S+?) \(", request)
    tasks = []
    for body in rng.sample(_TASK_BODIES, min(n, len(_TASK_BODIES))):
        opener = rng.choice(_TASK_OPENERS).format(L=language)
        extra = f" Use {software.group(1)} to store the results." if software else ""
        tasks.append({"instruction": f"{opener} {body}.{extra}"})
    return {"tasks": tasks}


__all__ = ["code_answer", "coding_tasks", "FENCE_WHEN_PLAIN", "INTRO_WHEN_PLAIN", "SYNTAX_ERROR"]
