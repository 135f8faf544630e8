"""`riddles`: the teacher writes riddles in batches; exact duplicates are dropped across the whole job."""
from __future__ import annotations

import copy
import hashlib
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import Field

from gen.instructors.base import Instructor, InstructorOptions, PlannedUnit, UnitInput
from gen.schemas import load_schema
from gen.types import NewRecord

DEFAULT_TOPICS = [
    "everyday objects", "nature and weather", "animals", "numbers and counting", "words and letters",
    "time and the calendar", "the human body", "food and cooking", "music", "the sea", "space", "tools",
]

PROMPT = """Write {n} original riddles about {topic}.
Each riddle is a short question that has one clear, fair answer which a thoughtful reader could work out.
Avoid well-known riddles and avoid repeating yourself. Give each riddle's answer in a few words.
This is batch {batch} of the collection."""


class RiddlesOptions(InstructorOptions):
    count: int = Field(gt=0, description="How many riddles to ask for in all (duplicates are then dropped).")
    batch_size: int = Field(default=5, gt=0, le=50, description="Riddles asked for per call.")
    topics: list[str] = Field(default_factory=lambda: list(DEFAULT_TOPICS), min_length=1,
                              description="Topics, used in turn, one per batch.")
    system: str | None = Field(default=None, description="A system prompt for the riddle-writing call.")


def normalise_question(text: str) -> str:
    """Exact-duplicate key: lower case, punctuation dropped, spaces collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", "", text.lower())).strip()


def batch_schema(n: int) -> dict[str, Any]:
    """`schemas/riddles.schema.json` asking for exactly n riddles."""
    schema = copy.deepcopy(load_schema("riddles"))
    schema["properties"]["riddles"].update(minItems=n, maxItems=n)
    return schema


class RiddlesInstructor(Instructor):
    name = "riddles"
    summary = "Riddles with answers, written in batches; duplicates removed across the job."
    Options = RiddlesOptions

    def plan(self) -> Iterator[PlannedUnit]:
        opts: RiddlesOptions = self.options  # type: ignore[assignment]
        batches = math.ceil(opts.count / opts.batch_size)
        for b in range(batches):
            n = min(opts.batch_size, opts.count - b * opts.batch_size)
            yield PlannedUnit(key=f"batch-{b:05d}", payload={"n": n, "topic": opts.topics[b % len(opts.topics)],
                                                              "batch": b + 1})

    async def run(self, unit: UnitInput, teachers: Mapping[str, Any]) -> list[NewRecord]:
        opts: RiddlesOptions = self.options  # type: ignore[assignment]
        p = unit.payload
        messages = []
        if opts.system:
            messages.append({"role": "system", "content": opts.system})
        messages.append({"role": "user", "content": PROMPT.format(n=p["n"], topic=p["topic"], batch=p["batch"])})
        teacher = teachers["main"]
        reply = await teacher.chat(messages, schema=batch_schema(p["n"]), schema_name="riddles")
        records = []
        for riddle in reply.data["riddles"][: p["n"]]:
            question, answer = riddle["question"].strip(), riddle["answer"].strip()
            records.append(NewRecord(
                key="riddle:" + hashlib.sha256(normalise_question(question).encode()).hexdigest()[:32],
                conversation=[{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                meta={"topic": p["topic"], "teacher": teacher.name, "model": teacher.model},
            ))
        return records
