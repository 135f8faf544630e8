"""Syntax checks of generated code that never run the program.

Python is parsed with `ast` and compiled with `compile()` in-process. Other languages are checked by a local
tool where one is installed (found with `shutil.which`): the code is written into a fresh temporary folder
and the tool's syntax-only mode runs there, with a timeout and no input (`node --check`, `gcc -fsyntax-only`,
`g++ -fsyntax-only`, `bash -n`, `tsc --noEmit`, `rustc --emit=metadata`, `javac -proc:none`, `gofmt -e`,
`ruby -c`, `php -l`). Where there is no tool, or the code needs something this machine lacks (a
C header, a Rust crate, a Java package, a TypeScript module or @types package), or the tool times out, the
result is "unchecked": never "passed" without a check.

Before any tool runs, the code must be in the task's language (`gen.codelang.wrong_language`): a C++ answer
to a C task, or Python in a shell answer, fails with the markers that gave it away. C is checked in C mode
(`gcc -x c`), so C++ headers and syntax fail instead of being taken for a missing library.

Not checked on purpose: `perl -c` runs BEGIN blocks, so Perl is "unchecked".
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Callable

from gen.codelang import NAMES, wrong_language

PASSED, FAILED, UNCHECKED = "passed", "failed", "unchecked"
MESSAGE_LINES = 6

# canonical id -> names a job file or a code fence may use for it
LANGUAGES: dict[str, tuple[str, ...]] = {
    "python": ("python", "python3", "py", "py3"),
    "javascript": ("javascript", "js", "node", "nodejs", "node.js", "mjs", "cjs", "ecmascript"),
    "typescript": ("typescript", "ts"),
    "c": ("c",),
    "cpp": ("c++", "cpp", "cxx", "cc", "hpp"),
    "shell": ("bash", "sh", "shell", "shell script", "bash script", "shellscript"),
    "rust": ("rust", "rs"),
    "go": ("go", "golang"),
    "java": ("java",),
    "ruby": ("ruby", "rb"),
    "php": ("php",),
    "csharp": ("c#", "csharp", "cs"),
    "kotlin": ("kotlin", "kt"),
    "swift": ("swift",),
    "sql": ("sql", "postgresql", "mysql", "sqlite"),
    "perl": ("perl", "pl"),
}
_ALIAS = {alias: lang for lang, aliases in LANGUAGES.items() for alias in aliases}
FENCE_TAGS = {"cpp": "cpp", "shell": "bash", "csharp": "csharp"}


def canonical_language(name: str) -> str:
    """"Python 3" -> python, "C++" -> cpp, "JavaScript (Node.js)" -> javascript; unknown names as written."""
    text = re.sub(r"\(.*?\)", "", name).strip().lower()
    if text in _ALIAS:
        return _ALIAS[text]
    first = re.sub(r"\s+\d[\d.]*$", "", text)  # "python 3.12"
    return _ALIAS.get(first, re.sub(r"\s+", "-", text) or "unknown")


def fence_tag(language: str) -> str:
    """The tag to ask for on a code fence (```python, ```cpp, ```bash)."""
    lang = canonical_language(language)
    return FENCE_TAGS.get(lang, lang)


@dataclass(frozen=True)
class CodeCheck:
    status: str                 # passed | failed | unchecked
    checker: str | None = None  # what checked it, e.g. "node --check"
    message: str = ""           # failed: the first lines of the checker's message; unchecked: why

    @property
    def failed(self) -> bool:
        return self.status == FAILED


@dataclass(frozen=True)
class ToolCheck:
    """A syntax-only check by an external tool."""

    tool: str                                            # the executable, found with shutil.which
    label: str                                           # what the record's meta names as its checker
    argv: Callable[[str, str], list[str]]                # (executable, file name) -> command line
    filename: Callable[[str], str]                       # code -> file name to write it under
    needs_missing: tuple[str, ...] = field(default=())   # output patterns meaning "this machine lacks a dependency"
    error_line: str | None = None                        # when set, unchecked only if EVERY such line needs_missing


_ESM = re.compile(r"^\s*(import|export)\b[^(]", re.M)
_JAVA_CLASS = re.compile(r"\bpublic\s+(?:(?:final|abstract|sealed|static)\s+)*(?:class|interface|enum|record)\s+(\w+)")


def _java_file(code: str) -> str:
    match = _JAVA_CLASS.search(code)
    return f"{match.group(1) if match else 'Main'}.java"


def _file(name: str) -> Callable[[str], str]:
    return lambda code: name


_NO_SUCH_HEADER = (r"fatal error: .*: No such file or directory",)
CPP_HEADERS = ("iostream", "vector", "string", "map", "unordered_map", "set", "unordered_set", "algorithm",
               "memory", "fstream", "sstream", "iomanip", "thread", "mutex", "optional", "array", "deque", "queue",
               "stack", "list", "functional", "chrono", "utility", "numeric", "cstdio", "cstdlib", "cstring",
               "cmath", "cstdint", "cctype", "cassert", "ctime", "exception", "stdexcept", "tuple", "regex")
# In C, a C++ standard header is not "a library this machine lacks": the answer is not C.
_NO_SUCH_C_HEADER = (rf"fatal error: (?!(?:{'|'.join(CPP_HEADERS)}): )[^:\n]*: No such file or directory",)
# TypeScript errors meaning a module or its type declarations are not installed here (not the code's fault)
_TS_MISSING = (r"error TS(?:2307|2580|2591|2592|2593|2584|2503|2688|2792|7016):",)

TOOLS: dict[str, ToolCheck] = {
    "javascript": ToolCheck("node", "node --check", lambda exe, f: [exe, "--check", f],
                            lambda code: "answer.mjs" if _ESM.search(code) else "answer.cjs"),
    "c": ToolCheck("gcc", "gcc -fsyntax-only -x c", lambda exe, f: [exe, "-fsyntax-only", "-x", "c", "-std=gnu17",
                                                                    "-w", f],
                   _file("answer.c"), needs_missing=_NO_SUCH_C_HEADER),
    "cpp": ToolCheck("g++", "g++ -fsyntax-only", lambda exe, f: [exe, "-fsyntax-only", "-w", "-std=c++20", f],
                     _file("answer.cpp"), needs_missing=_NO_SUCH_HEADER),
    "shell": ToolCheck("bash", "bash -n", lambda exe, f: [exe, "-n", f], _file("answer.sh")),
    "typescript": ToolCheck("tsc", "tsc --noEmit",
                            lambda exe, f: [exe, "--noEmit", "--pretty", "false", "--target", "es2022", "--lib",
                                            "es2022,dom", "--module", "esnext", "--moduleResolution", "bundler",
                                            "--skipLibCheck", f],
                            _file("answer.ts"), needs_missing=_TS_MISSING, error_line=r"error TS\d+:"),
    "rust": ToolCheck("rustc", "rustc --emit=metadata",
                      lambda exe, f: [exe, "--edition", "2021", "--crate-type", "lib", "--emit=metadata",
                                      "-o", "out/answer.rmeta", "-A", "warnings", f],
                      _file("answer.rs"),  # E0432/E0433/E0463: a crate or module this machine does not have
                      needs_missing=(r"error\[E0432\].*", r"error\[E0433\].*", r"error\[E0463\].*")),
    "java": ToolCheck("javac", "javac -proc:none", lambda exe, f: [exe, "-proc:none", "-Xlint:none", "-d", "out", f],
                      _java_file, needs_missing=(r"package [\w.]+ does not exist",)),
    "go": ToolCheck("gofmt", "gofmt -e", lambda exe, f: [exe, "-e", "-l", f], _file("answer.go")),
    "ruby": ToolCheck("ruby", "ruby -c", lambda exe, f: [exe, "-c", f], _file("answer.rb")),
    "php": ToolCheck("php", "php -l", lambda exe, f: [exe, "-l", f], _file("answer.php")),
}


def check_code(language: str, code: str, *, timeout: float = 10.0) -> CodeCheck:
    """Check `code` as `language` without running it: passed, failed (with the checker's message) or unchecked."""
    lang = canonical_language(language)
    other = wrong_language(lang, code)
    if other is not None:
        return CodeCheck(FAILED, "language markers", f"the code is {NAMES[other.language]}, not {language} "
                                                     f"({', '.join(other.found)})")
    if lang == "python":
        return check_python(code)
    tool = TOOLS.get(lang)
    if tool is None:
        return CodeCheck(UNCHECKED, None, f"no syntax checker for {language}")
    return run_tool(tool, code, timeout=timeout)


def check_python(code: str) -> CodeCheck:
    checker = "python ast+compile"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarning (invalid escapes...) is not a failure
        try:
            ast.parse(code)
            compile(code, "<answer>", "exec", dont_inherit=True)
        except SyntaxError as exc:
            where = f" (line {exc.lineno})" if exc.lineno else ""
            line = f"\n    {exc.text.strip()}" if exc.text and exc.text.strip() else ""
            return CodeCheck(FAILED, checker, f"{type(exc).__name__}: {exc.msg}{where}{line}")
        except (ValueError, MemoryError, RecursionError) as exc:  # NUL bytes, absurd nesting
            return CodeCheck(FAILED, checker, f"{type(exc).__name__}: {exc}")
    return CodeCheck(PASSED, checker)


def run_tool(tool: ToolCheck, code: str, *, timeout: float = 10.0) -> CodeCheck:
    executable = shutil.which(tool.tool)
    if executable is None:
        return CodeCheck(UNCHECKED, None, f"{tool.tool} is not installed here")
    label = tool.label
    with tempfile.TemporaryDirectory(prefix="gen-codecheck-") as folder:
        name = tool.filename(code)
        with open(os.path.join(folder, name), "w", encoding="utf-8") as fh:
            fh.write(code)
        os.makedirs(os.path.join(folder, "out"), exist_ok=True)
        try:
            done = subprocess.run(tool.argv(executable, name), cwd=folder, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, errors="replace", timeout=timeout,
                                  env={**os.environ, "LC_ALL": "C"})  # plain ASCII messages
        except subprocess.TimeoutExpired:
            return CodeCheck(UNCHECKED, label, f"{tool.tool} did not finish within {timeout:g}s")
        except OSError as exc:
            return CodeCheck(UNCHECKED, label, f"{tool.tool} could not be started ({exc.strerror})")
        output = (done.stderr + "\n" + done.stdout).replace(folder + os.sep, "").replace(folder, "")
    if done.returncode == 0:
        return CodeCheck(PASSED, label)
    if tool.error_line is not None:
        errors = [line for line in output.splitlines() if re.search(tool.error_line, line)]
        if errors and all(any(re.search(p, line) for p in tool.needs_missing) for line in errors):
            return CodeCheck(UNCHECKED, label, f"needs what this machine lacks: {first_lines(errors[0], 1)}")
        return CodeCheck(FAILED, label, first_lines(output) or f"{tool.tool} exited with status {done.returncode}")
    for pattern in tool.needs_missing:
        found = re.search(pattern, output)
        if found:
            return CodeCheck(UNCHECKED, label, f"needs what this machine lacks: {first_lines(found.group(0), 1)}")
    return CodeCheck(FAILED, label, first_lines(output) or f"{tool.tool} exited with status {done.returncode}")


def first_lines(text: str, n: int = MESSAGE_LINES, width: int = 200) -> str:
    lines = [line.rstrip()[:width] for line in text.splitlines()
             if line.strip() and "node:internal" not in line]  # node's own stack frames say nothing
    return "\n".join(lines[:n])


def available_checkers() -> dict[str, str]:
    """canonical language -> the checker this machine has for it (python always)."""
    found = {"python": "python ast+compile"}
    for lang, tool in TOOLS.items():
        if shutil.which(tool.tool):
            found[lang] = tool.label
    return found


__all__ = ["CodeCheck", "check_code", "check_python", "canonical_language", "fence_tag", "available_checkers",
           "PASSED", "FAILED", "UNCHECKED", "LANGUAGES"]
