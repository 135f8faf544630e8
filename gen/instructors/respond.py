"""`respond`: answer prompts, one call per unit. The plain distillation job and the benchmark workload."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import Field, model_validator

from gen.errors import JobFileError
from gen.instructors.base import Instructor, InstructorOptions, PlannedUnit, UnitInput
from gen.sources import read_text_file
from gen.types import Message, NewRecord, Teacher


class RespondOptions(InstructorOptions):
    prompts: list[str] | None = Field(default=None, description="Prompts written inline.")
    prompts_file: str | None = Field(default=None, description="JSONL (`prompt` or `instruction` field) or text, one prompt a line.")
    system: str | None = Field(default=None, description="A system prompt sent with every prompt and kept in the record.")
    count: int | None = Field(default=None, gt=0, description="Use at most this many prompts.")
    follow_ups: list[str] = Field(default_factory=list, description="Further user turns asked after each answer, "
                                  "in order: one call each, making multi-turn conversations.")

    @model_validator(mode="after")
    def _one_source(self) -> "RespondOptions":
        if not self.prompts and not self.prompts_file:
            raise ValueError("give `prompts` or `prompts_file`")
        return self


class RespondInstructor(Instructor[RespondOptions]):
    calls_per_unit = {"main": 1.0}  # one per prompt turn (estimates: gen.core.estimate)
    name = "respond"
    summary = "Answer prompts given inline or from a JSONL/text file, one call each."
    Options = RespondOptions

    def plan(self) -> Iterator[PlannedUnit]:
        opts = self.options
        prompts = list(opts.prompts or [])
        if opts.prompts_file:
            prompts += read_prompts(str(self.job.resolve_path(opts.prompts_file)), self.job.source)
        if opts.count:
            prompts = prompts[: opts.count]
        for i, prompt in enumerate(prompts):
            yield PlannedUnit(key=f"{i:07d}", payload={"prompt": prompt})

    async def run(self, unit: UnitInput, teachers: Mapping[str, Teacher]) -> list[NewRecord]:
        opts = self.options
        messages: list[Message] = []
        if opts.system:
            messages.append({"role": "system", "content": opts.system})
        messages.append({"role": "user", "content": unit.payload["prompt"]})
        teacher = teachers["main"]
        key = hashlib.sha256(json.dumps([messages, opts.follow_ups], sort_keys=True).encode()).hexdigest()[:32]
        for follow_up in [None, *opts.follow_ups]:
            if follow_up is not None:
                messages.append({"role": "user", "content": follow_up})
            reply = await teacher.chat(list(messages))  # each turn is a journaled step: a rerun replays it
            messages.append({"role": "assistant", "content": reply.text})
        return [NewRecord(key=key, conversation=messages, meta={"teacher": teacher.name, "model": teacher.model})]


def read_prompts(path: str, source: str) -> list[str]:
    """Prompts from a .jsonl file (`prompt` or `instruction` field) or a text file (one per non-empty line)."""
    lines = read_text_file(path, label=source, option="instructor.prompts_file").splitlines()
    if not any(line.strip() for line in lines):
        raise JobFileError(source, [f"instructor.prompts_file: {path} holds no prompts"])
    if not path.endswith((".jsonl", ".json")):
        return [line.strip() for line in lines if line.strip()]
    prompts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise JobFileError(source, [f"instructor.prompts_file: {path} line {number}: not valid JSON"]) from None
        text = row.get("prompt") or row.get("instruction") if isinstance(row, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise JobFileError(source, [f"instructor.prompts_file: {path} line {number}: "
                                        "no 'prompt' or 'instruction' text"])
        prompts.append(text)
    return prompts
