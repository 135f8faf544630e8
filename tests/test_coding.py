"""The coding instructor against the simulator over real HTTP, with scripted teacher answers, and its checkers."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import ROOT, gen_cmd, sim_job
from gen.codecheck import TOOLS, check_code
from gen.config import parse_job
from gen.core.jobs import load_instructor
from gen.errors import JobFileError
from gen.instructors.coding.answers import is_prose, plainformat_problem
from gen.store import UnitState
from test_neardup import run_directly

ADD = "Write a Python function `add(a, b)` that returns the sum of two numbers."
MUL = "Write a Python function `mul(a, b)` that returns the product of two numbers."
ADD_CODE = "def add(a, b):\n    return a + b"
EXPLAINED = f"The function adds its two arguments.\n\n```python\n{ADD_CODE}\n```\n\nIt returns their sum."
TASKS = "programming tasks that a user might give"  # in the task-writing prompt
NORMAL = "Explain your approach briefly"             # in the request for the explained answer
PLAIN = "Reply with only the complete"               # in the request for the PLAINFORMAT answer


def coding_job(base_url: str, options: str = "", attempts: int = 3) -> str:
    return sim_job(base_url, name="code", instructor=f"  type: coding\n{options}",
                   run=f"run:\n  output_attempts: {attempts}\n")


def tasks(*instructions: str) -> str:
    return json.dumps({"tasks": [{"instruction": i} for i in instructions]})


def records_by_key(store, job_id, kind=None):
    return {r.key: r for r in store.iter_records(job_id, kind=kind)}


def test_plainformat_refuses_fences_and_intro_then_keeps_clean_code_and_marks_the_instruction_once(sim, tmp_path):
    sim.script([
        {"match": TASKS, "answers": [tasks(ADD, MUL + " PLAINFORMAT")]},
        {"match": NORMAL, "answers": [EXPLAINED]},
        {"match": f"{ADD}\n\n{PLAIN}", "answers": [f"```python\n{ADD_CODE}\n```",
                                                    f"Here is the code:\n{ADD_CODE}", ADD_CODE + "\n"]},
        {"match": PLAIN, "answers": ["def mul(a, b):\n    return a * b\n"]},
    ])
    # add and mul differ in two words: near-duplicates at the default threshold (0.5); this test is not about that
    store, job_id, results = run_directly(tmp_path, coding_job(
        sim.base_url, "  count: 2\n  tasks_per_unit: 2\n  near_duplicate_threshold: 0.9\n"))
    assert [r.state for r in results] == [UnitState.DONE]
    records = list(store.iter_records(job_id))
    assert {r.kind for r in records} == {"conversation"} and len(records) == 4
    plain = [r for r in records if r.meta["variant"] == "plainformat"]
    normal = [r for r in records if r.meta["variant"] == "normal"]
    for r in plain:
        instruction = r.conversation[0]["content"]
        assert instruction.endswith(" PLAINFORMAT") and instruction.count("PLAINFORMAT") == 1
        assert "```" not in r.conversation[1]["content"]
        assert r.meta["code_check"] == "passed" and r.meta["code_checker"] == "python ast+compile"
    assert {r.conversation[0]["content"] for r in plain} == {ADD + " PLAINFORMAT", MUL + " PLAINFORMAT"}
    assert {r.conversation[1]["content"] for r in plain} == {ADD_CODE, "def mul(a, b):\n    return a * b"}
    assert {r.conversation[0]["content"] for r in normal} == {ADD, MUL}  # no PLAINFORMAT on the explained ones
    assert all("```python" in r.conversation[1]["content"] and r.meta["code_check"] == "passed" for r in normal)
    # the fenced reply and the one with an intro sentence were refused (and paid for once each), never repaired
    refused = [c.reject_reason for c in store.calls_for_job(job_id) if c.accepted is False]
    assert len(refused) == 2
    assert "code fence" in refused[0] and "opens with prose: 'Here is the code:'" in refused[1]


def test_plainformat_with_closing_prose_is_kept_only_as_a_rejected_record(sim, tmp_path):
    sim.script([
        {"match": TASKS, "answers": [tasks(ADD)]},
        {"match": NORMAL, "answers": [EXPLAINED]},
        {"match": PLAIN, "answers": [ADD_CODE + "\n\nThis function returns the sum of its two arguments."]},
    ])
    store, job_id, results = run_directly(tmp_path, coding_job(sim.base_url, "  count: 1\n", attempts=2))
    assert [r.state for r in results] == [UnitState.DONE]  # the explained answer was accepted
    [kept] = store.iter_records(job_id, kind="conversation")
    [rejected] = store.iter_records(job_id, kind="rejected")
    assert kept.meta["variant"] == "normal"
    assert rejected.meta["variant"] == "plainformat"
    assert "ends with prose" in rejected.meta["rejected_because"]
    assert rejected.conversation[1]["content"].endswith("two arguments.")  # kept as the teacher wrote it
    assert store.stats(job_id).records == 1


def test_a_python_syntax_error_is_retried_then_the_unit_is_rejected_with_the_parsers_message(sim, tmp_path):
    broken = "Here it is.\n\n```python\ndef add(a, b)\n    return a + b\n```\n\nThat adds them."
    sim.script([{"match": TASKS, "answers": [tasks(ADD)]}, {"match": NORMAL, "answers": [broken]}])
    store, job_id, results = run_directly(tmp_path, coding_job(sim.base_url, "  count: 1\n  plain_ratio: 0\n"))
    assert [r.state for r in results] == [UnitState.REJECTED]
    [unit] = store.units(job_id)
    assert "SyntaxError: expected ':' (line 1)" in unit.last_error and "(after 3 attempts)" in unit.last_error
    answers = [c for c in store.calls_for_job(job_id) if NORMAL in c.messages[-1]["content"]]
    assert len(answers) == 3 and not any(c.accepted for c in answers)
    assert "python ast+compile rejects the code" in answers[0].reject_reason
    [rejected] = store.iter_records(job_id, kind="rejected")  # kept for review: gen export --rejected
    assert "SyntaxError" in rejected.meta["rejected_because"]
    assert store.stats(job_id).records == 0


def missing_tool_language() -> str | None:
    for lang, tool in TOOLS.items():
        if shutil.which(tool.tool) is None:
            return lang
    return None


@pytest.mark.parametrize("language", ["Haskell", "missing-tool"])
def test_a_language_with_no_local_checker_is_stored_as_unchecked_not_passed(sim, tmp_path, language):
    if language == "missing-tool":
        language = missing_tool_language()
        if language is None:
            pytest.skip("every checker gen knows is installed here")
    task = f"Write a {language} function that returns the sum of a list of integers."
    sim.script([
        {"match": TASKS, "answers": [tasks(task)]},
        {"match": NORMAL, "answers": [f"Fold over the list.\n\n```{language.lower()}\nsumList xs = foldr (+) 0 xs\n"
                                      "```\n\nThat is the whole function."]},
        {"match": PLAIN, "answers": ["sumList xs = foldr (+) 0 xs\n"]},
    ])
    store, job_id, _ = run_directly(tmp_path, coding_job(sim.base_url, f"  count: 1\n  languages: [{language}]\n"))
    records = list(store.iter_records(job_id))
    assert len(records) == 2 and {r.kind for r in records} == {"conversation"}
    for r in records:
        assert r.meta["code_check"] == "unchecked"
        assert r.meta["code_check_note"]  # why: no checker for the language, or its tool is not installed


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_c_code_is_checked_by_gcc_and_a_missing_header_is_unchecked_not_failed(sim, tmp_path):
    good = "#include <stdio.h>\nint main(void) {\n    printf(\"hi\\n\");\n    return 0;\n}\n"
    needs_libpq = "#include <libpq-fe.h>\nint main(void) {\n    return 0;\n}\n"
    first, second = ("Write a C program that prints hi to standard output and exits with status zero.",
                     "Write a C program that connects to PostgreSQL with libpq and then exits at once.")
    sim.script([
        {"match": TASKS, "answers": [tasks(first, second)]},
        {"match": f"{first}\n\n{NORMAL}", "answers": [f"Use printf.\n\n```c\n{good}```\n\nThat prints it."]},
        {"match": f"{second}\n\n{NORMAL}", "answers": [f"Use libpq.\n\n```c\n{needs_libpq}```\n\nIt links -lpq."]},
        {"match": f"{first}\n\n{PLAIN}", "answers": ["int main(void) { return 0 }\n", good]},
        {"match": f"{second}\n\n{PLAIN}", "answers": [needs_libpq]},
    ])
    store, job_id, _ = run_directly(tmp_path, coding_job(
        sim.base_url, "  count: 2\n  tasks_per_unit: 2\n  languages: [C]\n"))
    checks = {(r.conversation[0]["content"], r.meta["code_check"]) for r in store.iter_records(job_id)}
    assert checks == {(first, "passed"), (first + " PLAINFORMAT", "passed"),
                      (second, "unchecked"), (second + " PLAINFORMAT", "unchecked")}
    refused = [c.reject_reason for c in store.calls_for_job(job_id) if c.accepted is False]
    assert len(refused) == 1 and refused[0].startswith("gcc -fsyntax-only -x c rejects the code:\n")
    assert "answer.c:1:26: error: expected ';' before '}' token" in refused[0]


def test_near_duplicate_tasks_are_dropped_before_any_answer_is_paid_for(sim, tmp_path):
    again = "Write a Python function `add(a, b)` that returns the sum of two given numbers."
    sim.script([
        {"match": "This is batch 1 of", "answers": [tasks(ADD)]},
        {"match": "This is batch 2 of", "answers": [tasks(again)]},
        {"match": NORMAL, "answers": [EXPLAINED]},
        {"match": PLAIN, "answers": [ADD_CODE]},
    ])
    store, job_id, results = run_directly(tmp_path, coding_job(sim.base_url, "  count: 2\n  tasks_per_unit: 1\n"))
    assert [r.state for r in results] == [UnitState.DONE, UnitState.DONE]
    assert store.stats(job_id).records == 2  # the first task, twice (explained and PLAINFORMAT)
    assert store.near_duplicates(job_id) == 1
    assert len(store.calls_for_job(job_id)) == 4  # two task-writing calls, two answers for the first task only


def test_plain_ratio_picks_the_same_tasks_every_time_the_unit_runs(sim, tmp_path):
    many = [f"Write a Python function number {i} that returns the constant {i} times {i}." for i in range(8)]
    sim.script([{"match": TASKS, "answers": [tasks(*many)]}, {"match": NORMAL, "answers": [EXPLAINED]},
                {"match": PLAIN, "answers": [ADD_CODE]}])
    picked = []
    for _ in range(2):
        store, job_id, _ = run_directly(tmp_path, coding_job(
            sim.base_url, "  count: 8\n  tasks_per_unit: 8\n  plain_ratio: 0.5\n"), neardup=False)
        picked.append(sorted(r.conversation[0]["content"] for r in store.iter_records(job_id)
                             if r.meta["variant"] == "plainformat"))
    assert picked[0] == picked[1] and 0 < len(picked[0]) < 8


def test_options_are_validated_with_their_path():
    job = {"name": "c", "instructor": {"type": "coding", "count": 3, "plain_ratio": 1.5},
           "teachers": {"main": {"provider": "openai-compatible", "model": "m", "base_url": "http://x"}}}
    with pytest.raises(JobFileError, match=r"instructor\.plain_ratio: must be <= 1"):
        load_instructor(parse_job(job))


def test_planning_spreads_languages_topics_and_related_software():
    job = {"name": "c", "instructor": {"type": "coding", "count": 8, "tasks_per_unit": 2,
                                       "languages": ["Python", "Go"], "topics": ["files", "sorting"],
                                       "related_software": ["PostgreSQL", "Redis"], "related_software_ratio": 0.5},
           "teachers": {"main": {"provider": "openai-compatible", "model": "m", "base_url": "http://x"}}}
    units = list(load_instructor(parse_job(job)).plan())
    assert [(u.payload["language"], u.payload["topic"]) for u in units] == [
        ("Python", "files"), ("Go", "files"), ("Python", "sorting"), ("Go", "sorting")]
    assert [u.payload["software"] for u in units] == [None, "PostgreSQL", None, "Redis"]


@pytest.mark.parametrize("text, prose", [
    ("Here is the code:", True), ("Sure! Here's a Python script that does it:", True),
    ("This script reads the file and prints the total.", True), ("**Explanation:**", True),
    ("def main():", False), ("main()", False), ("# Here is a comment.", False), ("}", False),
    ('if __name__ == "__main__":', False), ("SELECT name FROM users ORDER BY name", False),
])
def test_what_counts_as_prose_around_plain_code(text, prose):
    assert is_prose(text) is prose


def test_plainformat_never_accepts_a_fence_anywhere():
    assert plainformat_problem(f"{ADD_CODE}\n```\n") is not None
    assert plainformat_problem(f"~~~\n{ADD_CODE}\n~~~") is not None
    assert plainformat_problem(ADD_CODE) is None


@pytest.mark.parametrize("language, good, bad", [
    ("JavaScript", "const add = (a, b) => a + b;\nconsole.log(add(1, 2));\n", "function (a, b) { return a + b }\n"),
    ("C++", "#include <vector>\nint main() { std::vector<int> v{1}; return (int)v.size(); }\n", "int main( {\n"),
    ("Bash", "for f in *.txt; do\n  echo \"$f\"\ndone\n", "if then fi\n"),
])
def test_local_checkers_pass_good_code_and_fail_bad_code_with_the_tools_message(language, good, bad):
    tool = TOOLS[{"JavaScript": "javascript", "C++": "cpp", "Bash": "shell"}[language]]
    if shutil.which(tool.tool) is None:
        pytest.skip(f"{tool.tool} is not installed")
    assert check_code(language, good).status == "passed"
    failed = check_code(language, bad)
    assert failed.status == "failed" and failed.checker == tool.label and failed.message
    assert "gen-codecheck-" not in failed.message  # the temporary folder is not in the message


def test_the_worked_example_dry_run_finishes(tmp_path):
    """The simulator writes code in the language asked for: the dry run exports checked answers."""
    result = gen_cmd("run", str(ROOT / "instructors" / "coding.yml"), "--dry-run", "--sim-latency", "0.01", "-q")
    assert result.returncode == 0, result.stderr
    status = gen_cmd("status", "coding-demo")
    assert "8/8 finished" in status.stdout
    exported = gen_cmd("export", "coding-demo", "-o", str(tmp_path / "code.jsonl"), "--meta")
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in (tmp_path / "code.jsonl").read_text().splitlines()]
    assert lines and any(line["metadata"]["code_check"] == "passed" for line in lines)


# Issue #10, point 7: PLAINFORMAT prose in shell answers, and code in the wrong language -----------------------
SHELL_TASK = "Write a Bash script that prints the names of all .txt files in the current directory."
SHELL_CODE = "#!/bin/bash\nfor f in *.txt; do\n  echo \"$f\"\ndone\n"
SHELL_WITH_PROSE = ("#!/bin/bash\nThis script prints the name of every text file in the directory.\n"
                    "for f in *.txt; do\n  echo \"$f\"\ndone\n")


def test_shell_prose_that_bash_accepts_is_refused_in_plainformat(sim, tmp_path):
    assert check_code("Bash", SHELL_WITH_PROSE).status == "passed"  # the compiler alone lets it through
    sim.script([
        {"match": TASKS, "answers": [tasks(SHELL_TASK)]},
        {"match": NORMAL, "answers": [f"Loop over the glob.\n\n```bash\n{SHELL_CODE}```\n\nThat prints them."]},
        {"match": PLAIN, "answers": [SHELL_WITH_PROSE, SHELL_CODE]},
    ])
    store, job_id, _ = run_directly(tmp_path, coding_job(sim.base_url, "  count: 1\n  languages: [Bash]\n"))
    refused = [c.reject_reason for c in store.calls_for_job(job_id) if c.accepted is False]
    assert refused == ["PLAINFORMAT answer must be only code, but line 2 is prose: "
                       "'This script prints the name of every text file in the directory.'"]
    plain = [r for r in store.iter_records(job_id) if r.meta["variant"] == "plainformat"]
    assert [r.conversation[-1]["content"] for r in plain] == [SHELL_CODE.strip()]


C_TASK = "Write a C program that prints hello and exits with status zero."
CPP_ANSWER = "#include <iostream>\nint main() {\n    std::cout << \"hello\" << std::endl;\n    return 0;\n}\n"
C_ANSWER = "#include <stdio.h>\nint main(void) {\n    printf(\"hello\\n\");\n    return 0;\n}\n"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_a_cpp_answer_to_a_c_task_is_refused_not_stored_as_unchecked(sim, tmp_path):
    sim.script([
        {"match": TASKS, "answers": [tasks(C_TASK)]},
        {"match": NORMAL, "answers": [f"Use iostream.\n\n```c\n{CPP_ANSWER}```\n\nIt prints hello.",
                                      f"Use printf.\n\n```c\n{C_ANSWER}```\n\nIt prints hello."]},
        {"match": PLAIN, "answers": [CPP_ANSWER, C_ANSWER]},
    ])
    store, job_id, _ = run_directly(tmp_path, coding_job(sim.base_url, "  count: 1\n  languages: [C]\n"))
    records = list(store.iter_records(job_id))
    assert len(records) == 2 and {r.meta["code_check"] for r in records} == {"passed"}
    assert all("std::" not in r.conversation[-1]["content"] for r in records)
    refused = [c.reject_reason for c in store.calls_for_job(job_id) if c.accepted is False]
    assert len(refused) == 2 and all("the code is C++, not C" in r for r in refused)


@pytest.mark.parametrize("language, code, other", [
    ("C", CPP_ANSWER, "C++"), ("Bash", "import os\n\ndef main():\n    print(os.getcwd())\n", "Python"),
    ("Python", "const x = require('fs');\nconsole.log(x);\n", "JavaScript"),
    ("JavaScript", "def f(x):\n    return x\n", "Python"),
])
def test_code_in_another_language_fails_with_the_markers_that_gave_it_away(language, code, other):
    result = check_code(language, code)
    assert result.status == "failed" and result.message.startswith(f"the code is {other}, not {language}")


@pytest.mark.parametrize("language, code", [
    ("C++", C_ANSWER),  # C is (almost always) valid C++
    pytest.param("TypeScript", "const x = 1;\nconsole.log(x);\n",  # so is JavaScript TypeScript (tsc checks it)
                 marks=pytest.mark.skipif(shutil.which("tsc") is None, reason="tsc is not installed")),
    ("Python", "# std::vector in a comment is not C++\nprint('console.log(x) in a string')\n"),
])
def test_languages_that_contain_the_answer_or_markers_in_comments_are_not_wrong(language, code):
    assert check_code(language, code).status == "passed"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_c_is_compiled_as_c_so_a_cpp_header_fails_instead_of_being_a_missing_library():
    mixed = "#include <stdio.h>\n#include <vector>\nint main(void) { printf(\"x\"); return 0; }\n"
    result = check_code("C", mixed)
    assert result.status == "failed" and "vector: No such file" in result.message
    assert check_code("C", "#include <libpq-fe.h>\nint main(void) { return 0; }\n").status == "unchecked"


@pytest.mark.skipif(shutil.which("tsc") is None, reason="tsc is not installed (npm install -g typescript)")
def test_typescript_is_type_checked_by_tsc_and_missing_modules_are_unchecked():
    good = "interface P { name: string }\nfunction greet(p: P): string { return p.name; }\nconsole.log(greet({name: 'x'}));\n"
    assert check_code("TypeScript", good).status == "passed"
    wrong = check_code("TypeScript", "function f(p: string): number { return p; }\n")
    assert wrong.status == "failed" and "TS2322" in wrong.message
    needs = check_code("TypeScript", "import express from 'express';\nconst app = express();\n")
    assert needs.status == "unchecked" and "TS2307" in needs.message
    both = check_code("TypeScript", "import express from 'express';\nconst n: number = 'x';\n")
    assert both.status == "failed"  # a missing module does not hide a real error


@pytest.mark.parametrize("language, code", [
    ("Bash", "#!/bin/bash\n# This script prints the name of every text file in the directory.\nls *.txt\n"),
    ("Bash", "cat <<EOF\nUsage: backup.sh SOURCE DEST\nThis copies every file from the source to the destination.\nEOF\n"),
    ("Bash", "echo Hello world, this is a test of the system and it is fine\n"),
    ("Python", 'def add(a, b):\n    """Return the sum.\n\n    This is the function you call when you want to add them.\n    """\n'
               "    return a + b\n"),
    ("Python", 'MESSAGE = "This is a message for the user of the tool."\nprint(MESSAGE)\n'),
    ("C", "/*\n * This program prints a greeting to the user of the program.\n */\nint main(void) { return 0; }\n"),
    ("JavaScript", "const msg = `\nThis is a long message for all of the users.\n`;\nconsole.log(msg);\n"),
    ("SQL", "SELECT name FROM users ORDER BY name\n"),
])
def test_english_where_code_allows_it_is_not_prose(language, code):
    assert plainformat_problem(code, language) is None


ENGLISH = ["This script prints the name of every file in the directory.",
           "The function returns the sum of the two numbers given to it.",
           "Note that this is not safe to use with more than one thread.",
           "It reads the file line by line and counts the words in each line.",
           "You can run it with the name of the file as the first argument.",
           "First, we create a list to hold all of the results."]


@pytest.mark.parametrize("language, code", [
    ("Bash", SHELL_CODE), ("Python", ADD_CODE + "\n"), ("C", C_ANSWER), ("JavaScript", "const x = 1;\nconsole.log(x);\n"),
])
@pytest.mark.parametrize("sentence", ENGLISH)
def test_a_sentence_anywhere_in_plain_code_is_found_and_as_a_comment_it_is_fine(language, code, sentence):
    lines = code.splitlines()
    comment = "#" if language in ("Bash", "Python") else "//"
    for at in range(len(lines) + 1):
        with_prose = "\n".join([*lines[:at], sentence, *lines[at:]])
        assert plainformat_problem(with_prose, language) is not None, with_prose
        assert plainformat_problem("\n".join([*lines[:at], f"{comment} {sentence}", *lines[at:]]), language) is None


SUBJECTS = ["This script", "The function", "It", "This program", "The code above", "Each line", "Then the loop"]
VERBS = ["reads", "prints", "returns", "counts", "checks", "creates", "stores", "sorts"]
OBJECTS = ["the name of every file", "all of the results", "the sum of the numbers", "each line of the input",
           "a list of the words", "the total"]
TAILS = ["in the directory", "for the user", "to the screen", "from the file", "with a loop", "as it goes", ""]


def test_property_generated_sentences_are_prose_in_code_and_fine_as_comments():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    sentence = st.builds(lambda s, v, o, t, end: f"{s} {v} {o} {t}".strip() + end, st.sampled_from(SUBJECTS),
                         st.sampled_from(VERBS), st.sampled_from(OBJECTS), st.sampled_from(TAILS),
                         st.sampled_from([".", "!", ":", ""]))
    programs = st.sampled_from([("Bash", SHELL_CODE), ("Python", ADD_CODE), ("C", C_ANSWER),
                                ("JavaScript", "const x = 1;\nconsole.log(x);\n"), ("Go", "package main\n\nfunc main() {\n}\n")])

    @settings(max_examples=200, deadline=None)
    @given(programs, sentence, st.data())
    def check(program, text, data):
        language, code = program
        lines = code.splitlines()
        at = data.draw(st.integers(min_value=0, max_value=len(lines)))
        if len(text.split()) < 8 and not text.endswith((".", "!", ":")):
            return  # a short fragment without an end mark is not a sentence by the rule
        assert plainformat_problem("\n".join([*lines[:at], text, *lines[at:]]), language) is not None
        comment = "#" if language in ("Bash", "Python") else "//"
        indent = data.draw(st.sampled_from(["", "    "]))
        assert plainformat_problem("\n".join([*lines[:at], f"{indent}{comment} {text}", *lines[at:]]), language) is None

    check()
