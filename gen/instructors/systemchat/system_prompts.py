"""`system_prompts`: system prompts written in batches, one category per batch, categories used in turn.

Each prompt is stored as a record: `[user: "Write a system prompt ... Category: C.", assistant: PROMPT]` with
meta {category, constraints, source}; a `systemchat` job reads them back with `system_prompts_job: NAME`.
Exact duplicates (normalised text) are dropped across the job by the record key; near-duplicates (character
3-gram Jaccard of the identity form >= `near_duplicate_threshold`, as gen.neardup measures) against the seed list and the prompts already kept from the
same batch are dropped in the unit.
"""
from __future__ import annotations

import copy
import math
import random
from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import Any

from pydantic import Field

from gen.instructors.base import Instructor, InstructorOptions, PlannedUnit, UnitInput
from gen.instructors.earlier_texts import EarlierTexts, first_message
from gen.instructors.systemchat.constraints import parse_constraints
from gen.instructors.systemchat.prompts import CATEGORIES, prompt_writer_message
from gen.instructors.systemchat.similarity import NearDuplicates, text_key
from gen.instructors.systemchat.sources import PromptEntry, read_prompt_file
from gen.neardup import DEFAULT_THRESHOLD
from gen.schemas import load_schema
from gen.types import NewRecord, Teacher


class SystemPromptsOptions(InstructorOptions):
    count: int = Field(gt=0, description="System prompts to ask for in all (duplicates are then dropped).")
    batch_size: int = Field(default=5, gt=0, le=25, description="Prompts asked for per call.")
    categories: list[str] = Field(default_factory=lambda: list(CATEGORIES), min_length=1,
                                  description="Categories, one per batch, used in turn (known names get a "
                                              "description; any other text is used as its own description).")
    seeds_file: str | None = Field(default=None, description="YAML/JSONL of seed prompts (e.g. "
                                   "data/mechanical_constraints.yaml): shown as examples, compared against.")
    include_seeds: bool = Field(default=True, description="Store the seed prompts as records of this job too.")
    examples: int = Field(default=3, ge=0, le=10, description="Seed prompts of the batch's category shown as "
                                                              "examples.")
    job_near_duplicate_threshold: float | None = Field(
        default=DEFAULT_THRESHOLD, gt=0, le=1, description="MinHash similarity at which a prompt is a near-duplicate of one kept "
        "anywhere in the job, by any worker (null: off).")
    near_duplicate_threshold: float = Field(default=DEFAULT_THRESHOLD, gt=0, le=1,
                                            description="Character 3-gram Jaccard at which a prompt is a near-"
                                                        "duplicate of a seed or an earlier one of its batch.")
    dedup_against_jobs: list[str] = Field(
        default_factory=list, description="Earlier jobs (ids or names, same database) whose system prompts count as already "
                                          "seen: a near-duplicate of one of them is dropped too.")
    system: str | None = Field(default=None, description="A system prompt for the prompt-writing call.")


def batch_schema(n: int) -> dict[str, Any]:
    schema = copy.deepcopy(load_schema("system_prompts"))
    schema["properties"]["prompts"].update(minItems=n, maxItems=n)
    return schema


def request_text(category: str) -> str:
    return f"Write a system prompt for an AI assistant. Category: {category}."


def prompt_record(entry: PromptEntry, **meta: Any) -> NewRecord:
    category = entry.category or "unspecified"
    return NewRecord(
        key=text_key("sysprompt:", entry.prompt),
        conversation=[{"role": "user", "content": request_text(category)},
                      {"role": "assistant", "content": entry.prompt}],
        meta={"category": entry.category, "constraints": list(entry.constraints), "source": entry.source, **meta},
    )


class SystemPromptsInstructor(Instructor[SystemPromptsOptions]):
    calls_per_unit = {"main": 1.0}
    name = "system_prompts"
    summary = "Diverse system prompts by category (mechanical, persona, guardrails, ...), for systemchat."
    Options = SystemPromptsOptions

    def seeds(self) -> list[PromptEntry]:
        opts = self.options
        if not opts.seeds_file:
            return []
        return read_prompt_file(self.job.resolve_path(opts.seeds_file), job_source=self.job.source,
                                option="seeds_file")

    @cached_property
    def earlier_texts(self) -> EarlierTexts:
        return EarlierTexts(self, self.options.dedup_against_jobs, lambda source: [
            ("system_prompts", p) for p in [first_message(source.conversation, "assistant")] if p])

    def plan(self) -> Iterator[PlannedUnit]:
        self.earlier_texts.check()
        opts = self.options
        seeds = self.seeds()
        if seeds and opts.include_seeds:
            yield PlannedUnit(key="seeds", payload={"seeds": [s.to_payload() for s in seeds]})
        rng = random.Random(f"system_prompts:{self.job.name}")
        seed_texts = [s.prompt for s in seeds]
        for b in range(math.ceil(opts.count / opts.batch_size)):
            category = opts.categories[b % len(opts.categories)]
            same = [s.prompt for s in seeds if s.category == category]
            examples = rng.sample(same, min(opts.examples, len(same)))
            yield PlannedUnit(key=f"batch-{b:05d}", payload={
                "n": min(opts.batch_size, opts.count - b * opts.batch_size), "category": category, "batch": b + 1,
                "examples": examples, "compare": seed_texts})


    async def _new_in_job(self, text: str) -> bool:
        """Near-duplicates of any prompt already kept anywhere in this job (MinHash, across workers)."""
        threshold = self.options.job_near_duplicate_threshold
        await self.earlier_texts.ensure(threshold)
        return await self.is_new_text("system_prompts", text, threshold=threshold)

    async def run(self, unit: UnitInput, teachers: Mapping[str, Teacher]) -> list[NewRecord]:
        opts = self.options
        p = unit.payload
        if "seeds" in p:
            return [prompt_record(PromptEntry(s["system_prompt"], s["category"], tuple(s["constraints"]),
                                              tuple(s["intents"]), "seed")) for s in p["seeds"]]
        messages = [{"role": "system", "content": opts.system}] if opts.system else []
        messages.append({"role": "user", "content": prompt_writer_message(
            n=p["n"], category=p["category"], batch=p["batch"], examples=p["examples"])})
        teacher = teachers["main"]
        reply = await teacher.chat(messages, schema=batch_schema(p["n"]), schema_name="system_prompts")
        seen = NearDuplicates(opts.near_duplicate_threshold)
        for text in p["compare"]:
            seen.add(text)
        kept: list[tuple[PromptEntry, dict[str, Any]]] = []
        dropped = 0
        for item in reply.data["prompts"][: p["n"]]:
            text = item["system_prompt"].strip()
            if not text:
                continue
            if seen.near(text) is not None or not await self._new_in_job(text):
                dropped += 1
                continue
            seen.add(text)
            extra: dict[str, Any] = {}
            try:
                constraints = tuple(c.id for c in parse_constraints(item["constraint"]))
            except ValueError as exc:
                constraints, extra["constraint_unrecognised"] = (), f"{item['constraint']!r}: {exc}"
            kept.append((PromptEntry(text, p["category"], constraints, (), "generated"), extra))
        return [prompt_record(entry, teacher=teacher.name, model=teacher.model, batch=p["batch"],
                              batch_near_duplicates=dropped, **extra) for entry, extra in kept]
