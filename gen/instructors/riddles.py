"""`riddles`: the teacher writes riddles in batches; duplicates are dropped across the whole job.

Exact duplicates (same normalised question) are dropped by their record key; near-duplicates by the job's
near-duplicate index (gen.neardup), through the job services the execution core gives every instructor (`self.is_new_text`).
With `verify: true` each new riddle is answered blind by the `solver` teacher and a `judge` teacher decides
whether the two answers agree (JSON per `schemas/riddle_verdict.schema.json`); a riddle they disagree on is kept
as a record of kind "rejected" (`on_disagreement: reject`) or kept with meta `verified: false` (`flag`).
"""
from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import Any, Literal

from pydantic import Field

from gen.errors import OutputRejected
from gen.instructors.base import Instructor, InstructorOptions, PlannedUnit, UnitInput
from gen.instructors.earlier_texts import EarlierTexts, first_message
from gen.neardup import DEFAULT_THRESHOLD
from gen.schemas import load_schema
from gen.text import normalise
from gen.types import NewRecord, Teacher

DEFAULT_TOPICS = [
    "everyday objects", "nature and weather", "animals", "numbers and counting", "words and letters",
    "time and the calendar", "the human body", "food and cooking", "music", "the sea", "space", "tools",
]

PROMPT = """Write {n} original riddles about {topic}.
Each riddle is a short question that has one clear, fair answer which a thoughtful reader could work out.
Avoid well-known riddles and avoid repeating yourself. Give each riddle's answer in a few words.
This is batch {batch} of the collection."""

SOLVER_PROMPT = """Solve this riddle. Reply with your answer in a few words, and nothing else.

{question}"""

JUDGE_PROMPT = """A riddle, the answer its author gave, and the answer of a solver who did not see the author's answer.
Decide whether the two answers agree: they agree when they name the same thing (synonyms, singular or plural, a \
more or less specific name for the same thing all agree); they disagree when they name different things, or when \
the solver did not give an answer.

Riddle: {question}
Author's answer: {answer}
Solver's answer: {solved}"""

VERIFY_ROLES = ("solver", "judge")


class RiddlesOptions(InstructorOptions):
    count: int = Field(gt=0, description="How many riddles to ask for in all (duplicates are then dropped).")
    batch_size: int = Field(default=5, gt=0, le=50, description="Riddles asked for per call.")
    topics: list[str] = Field(default_factory=lambda: list(DEFAULT_TOPICS), min_length=1,
                              description="Topics, used in turn, one per batch.")
    system: str | None = Field(default=None, description="A system prompt for the riddle-writing call.")
    near_duplicate_threshold: float | None = Field(
        default=DEFAULT_THRESHOLD, gt=0, le=1, description="Estimated Jaccard similarity (character 3-grams) at which a riddle "
                                             "is dropped as a near-duplicate of an earlier one; null turns it off.")
    dedup_against_jobs: list[str] = Field(
        default_factory=list, description="Earlier jobs (ids or names, same database) whose riddles count as already "
                                          "seen: a near-duplicate of one of them is dropped too.")
    verify: bool = Field(default=False, description="Have teacher `solver` answer each riddle blind and teacher "
                                                    "`judge` decide whether its answer agrees with the riddle's.")
    on_disagreement: Literal["reject", "flag"] = Field(
        default="reject", description="reject: keep the riddle as a rejected record; flag: keep it with meta "
                                      "verified: false.")


def batch_schema(n: int) -> dict[str, Any]:
    """`schemas/riddles.schema.json` asking for exactly n riddles."""
    schema = copy.deepcopy(load_schema("riddles"))
    schema["properties"]["riddles"].update(minItems=n, maxItems=n)
    return schema


class RiddlesInstructor(Instructor[RiddlesOptions]):
    name = "riddles"
    summary = "Riddles with answers, written in batches; duplicates removed across the job."
    Options = RiddlesOptions

    @classmethod
    def required_teachers(cls, options: RiddlesOptions) -> dict[str, str]:
        needed = super().required_teachers(options)
        if options.verify:
            for role in VERIFY_ROLES:
                needed[role] = (f"teachers: instructor 'riddles' with verify: true needs a teacher named '{role}' "
                                f"(it uses: main, {', '.join(VERIFY_ROLES)})")
        return needed

    @property
    def calls_per_unit(self) -> dict[str, float]:  # type: ignore[override]
        """One batch call; with verification, a solver and a judge call per riddle of the batch (a riddle
        dropped as a duplicate is not verified: fewer)."""
        opts = self.options
        if not opts.verify:
            return {"main": 1.0}
        per_unit = opts.count / math.ceil(opts.count / opts.batch_size)
        return {"main": 1.0, "solver": per_unit, "judge": per_unit}

    @cached_property
    def earlier_texts(self) -> EarlierTexts:
        return EarlierTexts(self, self.options.dedup_against_jobs, lambda source: [
            ("riddles", q) for q in [first_message(source.conversation, "user")] if q])

    def plan(self) -> Iterator[PlannedUnit]:
        self.earlier_texts.check()
        opts = self.options
        batches = math.ceil(opts.count / opts.batch_size)
        for b in range(batches):
            n = min(opts.batch_size, opts.count - b * opts.batch_size)
            yield PlannedUnit(key=f"batch-{b:05d}", payload={"n": n, "topic": opts.topics[b % len(opts.topics)],
                                                              "batch": b + 1})

    async def run(self, unit: UnitInput, teachers: Mapping[str, Teacher]) -> list[NewRecord]:
        opts = self.options
        p = unit.payload
        messages = []
        if opts.system:
            messages.append({"role": "system", "content": opts.system})
        messages.append({"role": "user", "content": PROMPT.format(n=p["n"], topic=p["topic"], batch=p["batch"])})
        teacher = teachers["main"]
        reply = await teacher.chat(messages, schema=batch_schema(p["n"]), schema_name="riddles")
        records: list[NewRecord] = []
        rejected: list[NewRecord] = []
        for riddle in reply.data["riddles"][: p["n"]]:
            question, answer = riddle["question"].strip(), riddle["answer"].strip()
            key = riddle_key(question)
            if not await self._is_new(question, key):
                continue
            conversation = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            meta: dict[str, Any] = {"topic": p["topic"], "teacher": teacher.name, "model": teacher.model}
            if opts.verify:
                meta.update(await verify_riddle(question, answer, teachers["solver"], teachers["judge"]))
                if not meta["verified"] and opts.on_disagreement == "reject":
                    reason = (f"blind answer disagrees: solver said {meta['solver_answer']!r}, riddle says "
                              f"{answer!r} ({meta['judge_reason']})")
                    rejected.append(NewRecord(key="rejected:" + key, conversation=conversation, kind="rejected",
                                              meta={**meta, "rejected_because": reason}))
                    continue
            records.append(NewRecord(key=key, conversation=conversation, meta=meta))
        if rejected and not records:
            first = rejected[0].meta["rejected_because"]
            raise OutputRejected(first if len(rejected) == 1 else f"all {len(rejected)} riddles rejected; first: "
                                 f"{first}", records=rejected)
        return records + rejected

    async def _is_new(self, question: str, key: str) -> bool:
        threshold = self.options.near_duplicate_threshold
        await self.earlier_texts.ensure(threshold)
        return await self.is_new_text("riddles", question, key=key, threshold=threshold)


def riddle_key(question: str) -> str:
    return "riddle:" + hashlib.sha256(normalise(question).encode()).hexdigest()[:32]


async def verify_riddle(question: str, answer: str, solver: Any, judge: Any) -> dict[str, Any]:
    """Meta saying whether a blind solver's answer agrees with the riddle's (`verified`), and why."""
    try:
        solved = (await solver.chat([{"role": "user", "content": SOLVER_PROMPT.format(question=question)}])).text
        solved = solved.strip()
        verdict = (await judge.chat([{"role": "user", "content": JUDGE_PROMPT.format(
            question=question, answer=answer, solved=solved)}], schema=load_schema("riddle_verdict"),
            schema_name="riddle_verdict")).data
    except OutputRejected as exc:  # no usable blind answer or verdict: not verified
        return {"verified": False, "solver_answer": None, "judge_reason": f"verification failed: {exc.reason}"}
    return {"verified": bool(verdict["agree"]), "solver_answer": solved, "judge_reason": verdict["reason"]}
