"""`coding`: the teacher writes coding tasks in batches, then answers each one twice: explained, and PLAINFORMAT.

A unit is one task-writing call asking for `tasks_per_unit` tasks in one language (JSON per
`schemas/coding_tasks.schema.json`), then the answer calls for the tasks that are not near-duplicates of a task
the job already has. Each answer is its own record: a variant whose reply fails its checks on every attempt is
kept as a record of kind "rejected" (with the checker's message); when nothing in the unit was accepted the unit
itself is rejected with that message.
"""
from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import Any

from pydantic import Field

from gen.codecheck import FAILED, PASSED, UNCHECKED, CodeCheck, canonical_language, check_code
from gen.errors import OutputRejected
from gen.instructors.base import Instructor, InstructorOptions, PlannedUnit, UnitInput
from gen.instructors.coding.answers import (
    blocks_in_language, normal_problem, normal_request, plain_instruction, plain_request, plainformat_problem,
    without_mark,
)
from gen.instructors.earlier_texts import EarlierTexts, first_message
from gen.neardup import DEFAULT_THRESHOLD
from gen.schemas import load_schema
from gen.text import normalise
from gen.types import Message, NewRecord, Teacher

DEFAULT_TOPICS = [
    "string processing", "files and directories", "data structures", "algorithms", "dates and times",
    "parsing structured text (CSV, JSON)", "command-line tools", "HTTP clients and APIs", "concurrency",
    "testing", "math and statistics", "classes and object design",
]

TASKS_PROMPT = """Write {n} different programming tasks that a user might give a coding assistant, in {language}, \
about {topic}.{software}
Each task is one instruction written as the user would write it: specific (inputs, outputs, constraints), \
self-contained, naming {language} explicitly, and answerable with one complete {language} program, function or \
class of at most about 80 lines.
Vary the difficulty and the kind of task (a function, a script, a class, a command-line tool, an algorithm).
Do not include solutions or code, and do not number the tasks. This is batch {batch} of the collection."""

SOFTWARE_CLAUSE = ("\nEvery task must involve {software} (for example connecting to it, storing or reading data "
                   "with it, or using its usual {language} client library).")


class CodingOptions(InstructorOptions):
    count: int = Field(gt=0, description="How many tasks to ask for in all (near-duplicates are then dropped).")
    tasks_per_unit: int = Field(default=3, gt=0, le=20, description="Tasks written per task-writing call (unit).")
    languages: list[str] = Field(default_factory=lambda: ["Python"], min_length=1,
                                 description="Languages, used in turn, one per unit.")
    topics: list[str] = Field(default_factory=lambda: list(DEFAULT_TOPICS), min_length=1,
                              description="Topics, used in turn.")
    related_software: list[str] = Field(default_factory=list,
                                        description="Software some tasks involve (a database, a queue, a framework).")
    related_software_ratio: float = Field(default=0.5, ge=0, le=1,
                                          description="Share of units whose tasks involve one of related_software.")
    plain_ratio: float = Field(default=1.0, ge=0, le=1,
                               description="Share of tasks that also get a PLAINFORMAT (code only) answer.")
    near_duplicate_threshold: float | None = Field(
        default=DEFAULT_THRESHOLD, gt=0, le=1, description="Estimated Jaccard similarity (character 3-grams) at which a task is "
                                             "dropped as a near-duplicate of an earlier one; null turns it off.")
    dedup_against_jobs: list[str] = Field(
        default_factory=list, description="Earlier jobs (ids or names, same database) whose tasks (per language) count as already "
                                          "seen: a near-duplicate of one of them is dropped too.")
    check_timeout: float = Field(default=10.0, gt=0, le=120, description="Seconds a syntax checker may take.")
    system: str | None = Field(default=None, description="A system prompt for the answer calls, kept in records.")


def tasks_schema(n: int) -> dict[str, Any]:
    schema = copy.deepcopy(load_schema("coding_tasks"))
    schema["properties"]["tasks"].update(minItems=n, maxItems=n)
    return schema


def combine(results: list[CodeCheck]) -> CodeCheck:
    """One verdict for several blocks: any failure fails; passed only when every block passed."""
    for result in results:
        if result.status == FAILED:
            return result
    if results and all(r.status == PASSED for r in results):
        return results[0]
    return next((r for r in results if r.status == UNCHECKED), CodeCheck(UNCHECKED, None, "no code"))


class CodingInstructor(Instructor[CodingOptions]):
    name = "coding"
    summary = "Coding tasks answered twice: explained with a fenced block, and PLAINFORMAT (code only); code checked."
    Options = CodingOptions

    @property
    def calls_per_unit(self) -> dict[str, float]:  # type: ignore[override]
        """The task list, then per task an explained answer and (plain_ratio of them) a PLAINFORMAT one."""
        opts = self.options
        return {"main": 1.0 + opts.tasks_per_unit * (1.0 + opts.plain_ratio)}

    @cached_property
    def earlier_texts(self) -> EarlierTexts:
        def tasks_of(source: Any) -> list[tuple[str, str]]:
            task, language = first_message(source.conversation, "user"), source.meta.get("language")
            return [(f"coding:{canonical_language(language)}", without_mark(task))] if task and language else []

        return EarlierTexts(self, self.options.dedup_against_jobs, tasks_of)

    def plan(self) -> Iterator[PlannedUnit]:
        self.earlier_texts.check()
        opts = self.options
        units = math.ceil(opts.count / opts.tasks_per_unit)
        langs, topics, software = opts.languages, opts.topics, opts.related_software
        for b in range(units):
            n = min(opts.tasks_per_unit, opts.count - b * opts.tasks_per_unit)
            # exactly `related_software_ratio` of the units, spread evenly, each naming the next program in turn
            picked = math.floor((b + 1) * opts.related_software_ratio) - math.floor(b * opts.related_software_ratio)
            chosen = software[math.floor(b * opts.related_software_ratio) % len(software)] \
                if software and picked else None
            yield PlannedUnit(key=f"tasks-{b:05d}", payload={
                "n": n, "language": langs[b % len(langs)], "topic": topics[(b // len(langs)) % len(topics)],
                "software": chosen, "batch": b + 1})

    async def run(self, unit: UnitInput, teachers: Mapping[str, Teacher]) -> list[NewRecord]:
        opts = self.options
        p = unit.payload
        teacher = teachers["main"]
        language = p["language"]
        software = SOFTWARE_CLAUSE.format(software=p["software"], language=language) if p.get("software") else ""
        prompt = TASKS_PROMPT.format(n=p["n"], language=language, topic=p["topic"], software=software,
                                     batch=p["batch"])
        reply = await teacher.chat([{"role": "user", "content": prompt}], schema=tasks_schema(p["n"]),
                                   schema_name="coding_tasks")
        rng = unit.rng()
        accepted: list[NewRecord] = []
        rejected: list[NewRecord] = []
        for item in reply.data["tasks"][: p["n"]]:
            task = without_mark(item["instruction"])
            with_plain = rng.random() < opts.plain_ratio  # drawn for every task, so replays line up
            key = hashlib.sha256(f"{canonical_language(language)}\n{normalise(task)}".encode()).hexdigest()[:32]
            if not await self._is_new(f"coding:{canonical_language(language)}", task, key):
                continue
            meta = {"language": language, "topic": p["topic"], "software": p.get("software"),
                    "teacher": teacher.name, "model": teacher.model}
            variants = ["normal", "plainformat"] if with_plain else ["normal"]
            for variant in variants:
                record = await self._answer(teacher, variant, task, language, key, meta)
                (rejected if record.kind == "rejected" else accepted).append(record)
        if rejected and not accepted:
            first = rejected[0].meta["rejected_because"]
            reason = first if len(rejected) == 1 else f"all {len(rejected)} answers rejected; first: {first}"
            raise OutputRejected(reason, raw=rejected[0].conversation[-1]["content"], records=rejected)
        return accepted + rejected

    async def _is_new(self, scope: str, text: str, key: str) -> bool:
        threshold = self.options.near_duplicate_threshold
        await self.earlier_texts.ensure(threshold)
        return await self.is_new_text(scope, text, key=key, threshold=threshold)

    async def _answer(self, teacher: Any, variant: str, task: str, language: str, key: str,
                      meta: dict[str, Any]) -> NewRecord:
        """One variant of one task: a conversation, or a record of kind "rejected" saying why."""
        opts = self.options
        plain = variant == "plainformat"
        instruction = plain_instruction(task) if plain else task
        request = plain_request(task, language) if plain else normal_request(task, language)
        head: list[Message] = [{"role": "system", "content": opts.system}] if opts.system else []
        results: dict[str, CodeCheck] = {}

        def code_check(text: str) -> CodeCheck:
            if text not in results:
                if plain:
                    results[text] = check_code(language, text, timeout=opts.check_timeout)
                else:
                    results[text] = combine([check_code(language, b.code, timeout=opts.check_timeout)
                                             for b in blocks_in_language(text, language)])
            return results[text]

        def check(reply: Any) -> str | None:
            problem = plainformat_problem(reply.text, language) if plain else normal_problem(reply.text, language)
            if problem:
                return problem
            result = code_check(reply.text)
            if result.status == FAILED:
                return f"{result.checker} rejects the code:\n{result.message}"
            return None

        record_key = f"{'plain' if plain else 'code'}:{key}"
        try:
            reply = await teacher.chat([*head, {"role": "user", "content": request}], check=check)
        except OutputRejected as exc:
            answer = (exc.raw or "").strip() or "(no answer)"
            return NewRecord(key=f"rejected:{record_key}", kind="rejected",
                             conversation=[*head, {"role": "user", "content": instruction},
                                           {"role": "assistant", "content": answer}],
                             meta={**meta, "variant": variant, "rejected_because": exc.reason})
        problem = check(reply)  # a replayed answer was checked when it was first accepted; its verdict is needed again
        if problem:
            return NewRecord(key=f"rejected:{record_key}", kind="rejected",
                             conversation=[*head, {"role": "user", "content": instruction},
                                           {"role": "assistant", "content": reply.text.strip()}],
                             meta={**meta, "variant": variant, "rejected_because": problem})
        result = code_check(reply.text)
        checked = {"code_check": result.status, "code_checker": result.checker}
        if result.status == UNCHECKED:
            checked["code_check_note"] = result.message
        return NewRecord(key=record_key, conversation=[*head, {"role": "user", "content": instruction},
                                                       {"role": "assistant", "content": reply.text.strip()}],
                         meta={**meta, "variant": variant, **checked})
