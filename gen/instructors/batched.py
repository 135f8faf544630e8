"""`trivia` and `jokes`: items written in batches (JSON per schema), exact and near-duplicates dropped job-wide.

Both work as `riddles` does: one call per unit asks for `batch_size` items about one topic; an item whose
normalised text was already seen in the job is dropped by its record key, one the job's near-duplicate index
holds a near-duplicate of is dropped through `self.is_new_text` (counted in `gen status`). What differs between
them is only the schema, the prompt and how an item becomes a conversation, so each is a small subclass here.
"""
from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, TypeVar

from pydantic import Field

from gen.instructors.base import Instructor, InstructorOptions, PlannedUnit, UnitInput
from gen.neardup import normalise
from gen.schemas import load_schema
from gen.types import Message, NewRecord, Teacher


class BatchOptions(InstructorOptions):
    count: int = Field(gt=0, description="How many items to ask for in all (duplicates are then dropped).")
    batch_size: int = Field(default=10, gt=0, le=50, description="Items asked for per call (one unit).")
    topics: list[str] = Field(default_factory=list, description="Topics, one per batch in turn (default: built-in).")
    system: str | None = Field(default=None, description="A system prompt for the writing call (not in records).")
    near_duplicate_threshold: float | None = Field(
        default=0.8, gt=0, le=1, description="Estimated Jaccard similarity (character 3-grams) at which an item "
                                             "is dropped as a near-duplicate of an earlier one; null turns it off.")


class TriviaOptions(BatchOptions):
    pass


class JokesOptions(BatchOptions):
    pass


O = TypeVar("O", bound=BatchOptions)


class BatchInstructor(Instructor[O]):
    """One call per batch; subclasses say which schema, prompt and conversation shape."""

    schema_name: ClassVar[str]
    list_field: ClassVar[str]
    default_topics: ClassVar[tuple[str, ...]]
    prompt: ClassVar[str]

    def plan(self) -> Iterator[PlannedUnit]:
        opts = self.options
        topics = opts.topics or list(self.default_topics)
        for b in range(math.ceil(opts.count / opts.batch_size)):
            n = min(opts.batch_size, opts.count - b * opts.batch_size)
            yield PlannedUnit(key=f"batch-{b:05d}", payload={"n": n, "topic": topics[b % len(topics)], "batch": b + 1})

    def batch_schema(self, n: int) -> dict[str, Any]:
        schema = copy.deepcopy(load_schema(self.schema_name))
        schema["properties"][self.list_field].update(minItems=n, maxItems=n)
        return schema

    async def run(self, unit: UnitInput, teachers: Mapping[str, Teacher]) -> list[NewRecord]:
        p, teacher = unit.payload, teachers["main"]
        messages: list[Message] = [{"role": "system", "content": self.options.system}] if self.options.system else []
        messages.append({"role": "user", "content": self.prompt.format(n=p["n"], topic=p["topic"], batch=p["batch"])})
        reply = await teacher.chat(messages, schema=self.batch_schema(p["n"]), schema_name=self.schema_name)
        records: list[NewRecord] = []
        for item in reply.data[self.list_field][: p["n"]]:
            conversation, dedup_text = self.conversation(item, p["topic"])
            key = f"{self.name}:" + hashlib.sha256(normalise(dedup_text).encode()).hexdigest()[:32]
            if not await self.is_new_text(self.name, dedup_text, key=key,
                                          threshold=self.options.near_duplicate_threshold):
                continue
            records.append(NewRecord(key=key, conversation=conversation, meta={
                "topic": p["topic"], "category": self.name, "teacher": teacher.name, "model": teacher.model,
                **self.extra_meta(item)}))
        return records

    def conversation(self, item: dict[str, Any], topic: str) -> tuple[list[Message], str]:
        """The record's conversation and the text duplicates are judged on."""
        raise NotImplementedError

    def extra_meta(self, item: dict[str, Any]) -> dict[str, Any]:
        return {}


TRIVIA_PROMPT = """Write {n} trivia questions about {topic}, each with its correct answer.
Every question has one short, factual, uncontroversial answer (a name, a number, a place, a date, a term).
Vary the difficulty, avoid the best-known trivia, and do not repeat yourself. This is batch {batch} of the \
collection."""

JOKES_PROMPT = """Write {n} original, clean jokes about {topic}.
For each, give the request a user would make ("Tell me a joke about ...", "Do you know any jokes about ...?", \
varied wording) and the joke itself: a one-liner, a pun, or a short setup and punchline.
Avoid the best-known jokes, and do not repeat yourself. This is batch {batch} of the collection."""


class TriviaInstructor(BatchInstructor[TriviaOptions]):
    name = "trivia"
    summary = "Trivia questions with short factual answers, in batches; duplicates removed across the job."
    Options = TriviaOptions
    schema_name, list_field, prompt = "trivia", "questions", TRIVIA_PROMPT
    default_topics = ("world geography", "history", "science", "literature", "music", "sport", "film",
                      "the human body", "space", "animals", "inventions", "art")

    def conversation(self, item: dict[str, Any], topic: str) -> tuple[list[Message], str]:
        question, answer = item["question"].strip(), item["answer"].strip()
        return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], question


class JokesInstructor(BatchInstructor[JokesOptions]):
    name = "jokes"
    summary = "Clean jokes with the request that asks for each, in batches; duplicates removed across the job."
    Options = JokesOptions
    schema_name, list_field, prompt = "jokes", "jokes", JOKES_PROMPT
    default_topics = ("animals", "food", "computers", "the office", "weather", "music", "sport", "school",
                      "space", "doctors", "books", "the sea")

    def conversation(self, item: dict[str, Any], topic: str) -> tuple[list[Message], str]:
        request, joke = item["request"].strip(), item["joke"].strip()
        return [{"role": "user", "content": request}, {"role": "assistant", "content": joke}], joke
