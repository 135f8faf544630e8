"""`cot`: several solutions to one problem, ranked, then the best and final answer.

A unit makes three kinds of call:
1. `main` writes a problem with one checkable answer (math or logic), JSON per `schemas/cot_problem.schema.json`;
2. `main` answers it as N solutions, each ending with its answer, plus a ranking (JSON per
   `schemas/cot_solutions.schema.json`: the ranking is a permutation of 1..N); gen renders the text::

       Solution 1:
       ...
       Final answer: ...

       Ranking of solutions from best to worst:
       1. Solution 2
       ...

       Best and final answer: <the top-ranked solution's answer>

   and checks it with `cot_structure_problem` (solutions numbered 1..N, each with a final answer, every solution
   ranked once, the best and final answer is the top-ranked solution's);
3. with `verify: true`, teacher `solver` answers the problem blind. When both answers hold a number they are
   compared as numbers; otherwise teacher `judge` (when the job has one) decides whether they agree, else their
   normalised texts must be equal. A disagreement rejects the record (kept for review) or flags it.
"""
from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import Field

from gen.errors import OutputRejected
from gen.instructors.base import Instructor, InstructorOptions, PlannedUnit, UnitInput
from gen.neardup import normalise
from gen.schemas import load_schema
from gen.types import NewRecord, Reply, Teacher

DEFAULT_TOPICS = ["arithmetic word problems", "probability", "combinatorics", "rates and work", "geometry",
                  "logic puzzles", "number theory", "ages and relations", "percentages and interest", "sequences"]

PROBLEM_PROMPT = """Write one {topic} problem with a single correct answer that can be checked (a number, or a \
short exact phrase). It should take a few steps of reasoning and admit more than one approach. This is problem \
{number} of the collection; do not reuse well-known textbook problems."""

SOLUTIONS_PROMPT = """{problem}

Give {n} different solutions to this problem, each reasoning step by step and ending with its own answer. Some \
approaches may be weaker than others. Then rank the solutions from best to worst (most complete and most likely \
correct first), and explain the ranking briefly."""

SOLVER_PROMPT = """Solve this problem. Reply with only the final answer (a number or a short phrase), nothing else.

{problem}"""

JUDGE_PROMPT = """A problem and two answers to it, found independently. Decide whether the two answers agree: \
they agree when they state the same result (the same value in other units or words agrees); they disagree when \
the results differ or one of them gives no result.

Problem: {problem}
First answer: {first}
Second answer: {second}"""

NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")


class CotOptions(InstructorOptions):
    count: int = Field(gt=0, description="How many problems (units) to make.")
    solutions: int = Field(default=3, ge=2, le=6, description="Solutions written per problem.")
    topics: list[str] = Field(default_factory=lambda: list(DEFAULT_TOPICS), min_length=1)
    verify: bool = Field(default=True, description="Have teacher `solver` answer each problem blind and compare.")
    on_disagreement: Literal["reject", "flag"] = Field(
        default="reject", description="reject: keep the record as rejected; flag: keep it with meta verified: false.")
    tolerance: float = Field(default=1e-6, ge=0, description="Relative tolerance when both answers are numbers.")


def render_cot(solutions: list[dict[str, str]], ranking: list[int], reason: str) -> str:
    parts = [f"Solution {i}:\n{s['reasoning'].strip()}\nFinal answer: {s['answer'].strip()}"
             for i, s in enumerate(solutions, 1)]
    ranked = "\n".join(f"{place}. Solution {n}" for place, n in enumerate(ranking, 1))
    parts.append(f"Ranking of solutions from best to worst:\n{ranked}\n{reason.strip()}".rstrip())
    parts.append(f"Best and final answer: {solutions[ranking[0] - 1]['answer'].strip()}")
    return "\n\n".join(parts)


SOLUTION_HEAD = re.compile(r"^Solution (\d+):\s*$", re.MULTILINE)
FINAL_LINE = re.compile(r"^Final answer: (\S.*)$", re.MULTILINE)
RANKING_HEAD = "Ranking of solutions from best to worst:"
RANK_LINE = re.compile(r"^(\d+)\. Solution (\d+)\b.*$", re.MULTILINE)
BEST = re.compile(r"^Best and final answer: (\S.*)\s*\Z", re.MULTILINE)


def cot_structure_problem(text: str, n: int | None = None) -> str | None:
    """Why `text` is not N numbered solutions, a ranking of all of them and the top one's final answer; or None."""
    if RANKING_HEAD not in text:
        return f"no '{RANKING_HEAD}' section"
    body, ranking = text.split(RANKING_HEAD, 1)
    heads = list(SOLUTION_HEAD.finditer(body))
    numbers = [int(h.group(1)) for h in heads]
    if not numbers or numbers != list(range(1, len(numbers) + 1)):
        return f"solutions must be numbered Solution 1..N in order (found {numbers or 'none'})"
    if n is not None and len(numbers) != n:
        return f"{n} solutions were asked for, {len(numbers)} given"
    answers: dict[int, str] = {}
    for i, head in enumerate(heads):
        section = body[head.end(): heads[i + 1].start() if i + 1 < len(heads) else len(body)]
        finals = FINAL_LINE.findall(section)
        if not finals or not section.split("Final answer:")[0].strip():
            return f"Solution {i + 1} needs its reasoning and a 'Final answer:' line"
        answers[i + 1] = finals[-1].strip()
    best = BEST.search(ranking)
    if not best:
        return "the text must end with 'Best and final answer: ...'"
    ranks = RANK_LINE.findall(ranking[: best.start()])
    places, ranked = [int(p) for p, _ in ranks], [int(s) for _, s in ranks]
    if places != list(range(1, len(answers) + 1)) or sorted(ranked) != sorted(answers):
        return f"the ranking must list every solution once, places 1..{len(answers)} (found {ranked})"
    if normalise(best.group(1)) != normalise(answers[ranked[0]]):
        return (f"the best and final answer ({best.group(1).strip()!r}) is not the answer of Solution {ranked[0]}, "
                f"ranked first ({answers[ranked[0]]!r})")
    return None


def number_in(text: str) -> float | None:
    """The last number in a short answer, fractions included; None when it has none."""
    found = NUMBER.findall(text)
    if not found:
        return None
    value = found[-1].replace(",", "")
    if "/" in value:
        top, bottom = value.split("/")
        return float(top) / float(bottom) if float(bottom) else None
    return float(value)


def solutions_schema(n: int) -> dict[str, Any]:
    schema = copy.deepcopy(load_schema("cot_solutions"))
    schema["properties"]["solutions"].update(minItems=n, maxItems=n)
    schema["properties"]["ranking"].update(minItems=n, maxItems=n)
    schema["properties"]["ranking"]["items"]["maximum"] = n
    return schema


class CotInstructor(Instructor[CotOptions]):
    name = "cot"
    summary = "Chain of thought: N solutions, a ranking, the best and final answer; checked against a blind solver."
    Options = CotOptions

    @property
    def calls_per_unit(self) -> dict[str, float | tuple[float, float]]:  # type: ignore[override]
        """The problem and the solutions; with verification a blind solver, and a judge (when there is one) only
        when the two answers are not both numbers: none to one."""
        if not self.options.verify:
            return {"main": 2.0}
        return {"main": 2.0, "solver": 1.0, "judge": (0.0, 1.5)}

    @classmethod
    def required_teachers(cls, options: CotOptions) -> dict[str, str]:
        needed = super().required_teachers(options)
        if options.verify:
            needed["solver"] = ("teachers: instructor 'cot' with verify: true needs a teacher named 'solver' "
                                "(it uses: main, solver, and judge when there is one)")
        return needed

    def plan(self) -> Iterator[PlannedUnit]:
        topics = self.options.topics
        for i in range(self.options.count):
            yield PlannedUnit(key=f"cot-{i:05d}", payload={"topic": topics[i % len(topics)], "number": i + 1})

    async def run(self, unit: UnitInput, teachers: Mapping[str, Teacher]) -> list[NewRecord]:
        opts, teacher, p = self.options, teachers["main"], unit.payload
        made = await teacher.chat([{"role": "user", "content": PROBLEM_PROMPT.format(**p)}],
                                  schema=load_schema("cot_problem"), schema_name="cot_problem")
        problem = made.data["question"].strip()

        def check(reply: Reply) -> str | None:
            d = reply.data
            if sorted(d["ranking"]) != list(range(1, opts.solutions + 1)):
                return f"the ranking must list solutions 1..{opts.solutions} once each (got {d['ranking']})"
            return cot_structure_problem(render_cot(d["solutions"], d["ranking"], d["ranking_reason"]),
                                         opts.solutions)

        reply = await teacher.chat([{"role": "user", "content": SOLUTIONS_PROMPT.format(problem=problem,
                                                                                        n=opts.solutions)}],
                                   schema=solutions_schema(opts.solutions), schema_name="cot_solutions", check=check)
        problem_found = check(reply)  # a replayed answer needs its verdict again
        if problem_found:
            raise OutputRejected(problem_found, raw=reply.text)
        d = reply.data
        answer_text = render_cot(d["solutions"], d["ranking"], d["ranking_reason"])
        final = d["solutions"][d["ranking"][0] - 1]["answer"].strip()
        conversation = [{"role": "user", "content": problem}, {"role": "assistant", "content": answer_text}]
        key = "cot:" + hashlib.sha256(normalise(problem).encode()).hexdigest()[:32]
        meta: dict[str, Any] = {"topic": p["topic"], "final_answer": final, "author_answer": made.data["answer"],
                                "teacher": teacher.name, "model": teacher.model}
        if opts.verify:
            meta.update(await self.verify(problem, final, teachers))
            if not meta["verified"] and opts.on_disagreement == "reject":
                reason = (f"blind answer disagrees: solver said {meta['solver_answer']!r}, best and final answer "
                          f"is {final!r} ({meta['verified_by']})")
                raise OutputRejected(reason, raw=answer_text, records=[NewRecord(
                    key="rejected:" + key, kind="rejected", conversation=conversation,
                    meta={**meta, "rejected_because": reason})])
        return [NewRecord(key=key, conversation=conversation, meta=meta)]

    async def verify(self, problem: str, final: str, teachers: Mapping[str, Teacher]) -> dict[str, Any]:
        solved = (await teachers["solver"].chat([{"role": "user", "content": SOLVER_PROMPT.format(
            problem=problem)}])).text.strip()
        a, b = number_in(final), number_in(solved)
        if a is not None and b is not None:
            agree = abs(a - b) <= self.options.tolerance * max(1.0, abs(a), abs(b))
            return {"verified": agree, "solver_answer": solved, "verified_by": "numbers compared"}
        judge = teachers.get("judge")
        if judge is None:
            return {"verified": normalise(final) == normalise(solved), "solver_answer": solved,
                    "verified_by": "texts compared"}
        try:
            verdict = (await judge.chat([{"role": "user", "content": JUDGE_PROMPT.format(
                problem=problem, first=final, second=solved)}], schema=load_schema("riddle_verdict"),
                schema_name="answer_verdict")).data
        except OutputRejected as exc:
            return {"verified": False, "solver_answer": solved, "verified_by": f"judge failed: {exc.reason}"}
        return {"verified": bool(verdict["agree"]), "solver_answer": solved,
                "verified_by": f"judge: {verdict['reason']}"}
