"""`systemchat`: long conversations in which the assistant keeps obeying its system prompt, judged turn by turn.

One unit is one conversation: a system prompt (or none, for `no_system_ratio` of them), a simulated user with
a goal, `min_turns`..`max_turns` exchanges (drawn from the unit's own seeded randomness), then one judge call
scoring every assistant turn. Checkable constraints are verified by code on every assistant turn. A rejected
conversation is kept (kind "rejected") with its scores and reasons: `gen export JOB --rejected --meta`.
"""
from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from gen.config import JobSpec
from gen.errors import JobFileError, OutputRejected
from gen.instructors.base import Instructor, InstructorOptions, JobServices, PlannedUnit, UnitInput
from gen.instructors.systemchat.constraints import constraint_problems, parse_constraints
from gen.instructors.systemchat.conversation import Conversation, ConversationPlan, ConversationStopped
from gen.instructors.systemchat.filters import TurnFilter
from gen.instructors.systemchat.judge import TurnScore, judge_messages, judge_schema, judge_summary, verdict
from gen.instructors.systemchat.prompts import DEFAULT_INTENTS, USER_STYLES
from gen.instructors.systemchat.similarity import normalise
from gen.instructors.systemchat.sources import PromptEntry, entries_from_job, entry_from, read_prompt_file
from gen.types import Message, NewRecord, Teacher


class SystemChatOptions(InstructorOptions):
    count: int = Field(gt=0, description="Conversations to make (one unit each).")
    system_prompts: list[str | dict[str, Any]] | None = Field(
        default=None, description="System prompts inline: strings, or {prompt, category, constraint, intents}.")
    system_prompts_file: str | list[str] | None = Field(
        default=None, description="YAML/JSONL/text file(s) of system prompts, relative to the job file.")
    system_prompts_job: str | None = Field(
        default=None, description="Id or name of an earlier `system_prompts` job whose prompts to use.")
    min_turns: int = Field(default=8, ge=1, le=100, description="Fewest user+assistant exchanges.")
    max_turns: int = Field(default=12, ge=1, le=100, description="Most user+assistant exchanges.")
    no_system_ratio: float = Field(default=0.1, ge=0, le=1, description="Share of conversations with no system "
                                                                         "prompt at all.")
    intents: list[str] = Field(default_factory=lambda: list(DEFAULT_INTENTS), min_length=1,
                               description="Goals for the simulated user (an entry's own `intents` win).")
    end_sentinel: str = Field(default="<<END>>", min_length=3, description="What the simulated user answers to "
                                                                           "end the conversation.")
    judge: bool = Field(default=True, description="Score every assistant turn with the `judge` teacher.")
    judge_threshold: float = Field(default=4, ge=1, le=5, description="Lowest acceptable score (see judge_rule).")
    judge_rule: Literal["any_turn", "mean"] = Field(
        default="any_turn", description="any_turn: every turn must reach the threshold; mean: their mean must.")
    filter_phrases: list[str] = Field(default_factory=list, description="Phrases that also make a turn unusable "
                                      "(whole words, case-insensitive), besides the AI-disclaimer detector's.")
    filter_patterns: list[str] = Field(default_factory=list, description="Regular expressions that also make a "
                                       "turn unusable (case-insensitive).")
    echo_threshold: float = Field(default=0.6, gt=0, le=1, description="3-word-shingle similarity at which a "
                                                                       "user turn counts as echoing the assistant.")
    retry_constraint_violations: bool = Field(
        default=True, description="Ask again for an assistant turn that breaks a checkable constraint.")

    @model_validator(mode="after")
    def _consistent(self) -> "SystemChatOptions":
        if self.min_turns > self.max_turns:
            raise ValueError("min_turns must not be more than max_turns")
        TurnFilter(self.filter_phrases, extra_patterns=self.filter_patterns)  # a bad regular expression: ValueError
        if self.no_system_ratio < 1 and not (self.system_prompts or self.system_prompts_file
                                             or self.system_prompts_job):
            raise ValueError("give system_prompts, system_prompts_file or system_prompts_job "
                             "(or no_system_ratio: 1 for conversations without one)")
        return self


class SystemChatInstructor(Instructor[SystemChatOptions]):
    name = "systemchat"
    summary = "Multi-turn conversations that keep to a system prompt; simulated user, per-turn judge, checks."
    Options = SystemChatOptions
    teacher_roles = ("user", "assistant")  # and "judge" unless `judge: false` (see required_teachers)

    @property
    def calls_per_unit(self) -> dict[str, float]:  # type: ignore[override]
        """A user and an assistant call per exchange: between min_turns and the planned number (the user may end
        after min_turns), and one verdict from the judge."""
        opts = self.options
        exchanges = (opts.min_turns + (opts.min_turns + max(opts.min_turns, opts.max_turns)) / 2) / 2
        return {"user": exchanges, "assistant": exchanges, "judge": 1.0 if opts.judge else 0.0}

    @classmethod
    def required_teachers(cls, options: SystemChatOptions) -> dict[str, str]:
        needed = super().required_teachers(options)
        if options.judge:
            needed["judge"] = ("teachers: instructor 'systemchat' needs a teacher named 'judge' "
                               "when judge is on (or set instructor.judge: false)")
        return needed

    @classmethod
    def from_job(cls, job: JobSpec, services: JobServices | None = None) -> "SystemChatInstructor":
        instructor = super().from_job(job, services)
        opts = instructor.options
        try:
            for entry in opts.system_prompts or []:
                entry_from(entry, source="inline")
        except ValueError as exc:
            raise JobFileError(job.source, [f"instructor.system_prompts: {exc}"]) from None
        assert isinstance(instructor, SystemChatInstructor)
        return instructor

    def entries(self) -> list[PromptEntry]:
        """Every system prompt from every source given, exact duplicates (normalised text) dropped."""
        opts = self.options
        found = [entry_from(e, source="inline") for e in opts.system_prompts or []]
        files = opts.system_prompts_file
        for path in [files] if isinstance(files, str) else files or []:
            found += read_prompt_file(self.job.resolve_path(path), job_source=self.job.source,
                                      option="system_prompts_file")
        if opts.system_prompts_job:
            found += entries_from_job(self.earlier_conversations(opts.system_prompts_job,
                                                                option="instructor.system_prompts_job"),
                                      job_source=self.job.source)
        unique: dict[str, PromptEntry] = {}
        for entry in found:
            unique.setdefault(normalise(entry.prompt), entry)
        return list(unique.values())

    def plan(self) -> Iterator[PlannedUnit]:
        """Prompts shuffled (seeded by the job name) and used in turn; `no_system_ratio` of the units get none."""
        opts = self.options
        entries = self.entries() if opts.no_system_ratio < 1 else []
        if opts.no_system_ratio < 1 and not entries:
            raise JobFileError(self.job.source, ["instructor: the system prompt sources given hold no prompts"])
        rng = random.Random(f"systemchat:{self.job.name}")
        rng.shuffle(entries)
        bare = set(rng.sample(range(opts.count), round(opts.count * opts.no_system_ratio)))
        used = 0
        for i in range(opts.count):
            if i in bare:
                payload = {"system_prompt": None, "category": None, "constraints": [], "intents": [],
                           "source": None}
            else:
                payload = entries[used % len(entries)].to_payload()
                used += 1
            yield PlannedUnit(key=f"conv-{i:06d}", payload=payload)

    async def run(self, unit: UnitInput, teachers: Mapping[str, Teacher]) -> list[NewRecord]:
        opts = self.options
        p = unit.payload
        rng = unit.rng()
        turns = rng.randint(opts.min_turns, opts.max_turns)
        intent = rng.choice(p.get("intents") or opts.intents)
        style = rng.choice(USER_STYLES)
        constraints = parse_constraints(p.get("constraints") or [])
        plan = ConversationPlan(p.get("system_prompt"), constraints, turns, opts.min_turns, intent, style,
                                opts.end_sentinel, opts.retry_constraint_violations)
        meta: dict[str, Any] = {
            "category": p.get("category"), "constraints": [c.id for c in constraints], "source": p.get("source"),
            "intent": intent, "user_style": style, "planned_turns": turns,
            # Under a guardrail prompt a refusal is the obedient answer: export's refusal filter spares these.
            "refusals_expected": p.get("category") == "guardrails",
            "teachers": {role: teachers[role].model for role in ("user", "assistant", "judge") if role in teachers
                         and (role != "judge" or opts.judge)},
        }
        conversation = Conversation(plan, teachers["user"], teachers["assistant"],
                                    TurnFilter(opts.filter_phrases, extra_patterns=opts.filter_patterns,
                                               echo_threshold=opts.echo_threshold))
        try:
            messages = await conversation.run()
        except ConversationStopped as stop:
            meta.update(turns=_exchanges(stop.partial), ended_by="rejected_turn", failed_turn=stop.turn)
            raise OutputRejected(stop.reason, raw=stop.raw, records=[_record(stop.partial, meta)]) from None
        meta.update(turns=_exchanges(messages), ended_by=conversation.ended_by)

        answers = [m["content"] for m in messages if m["role"] == "assistant"]
        scores = [TurnScore(i, violations=constraint_problems(constraints, text)) for i, text in enumerate(answers, 1)]
        if opts.judge:
            judge = teachers["judge"]
            try:
                reply = await judge.chat(judge_messages(plan.system_prompt, messages),
                                         schema=judge_schema(len(answers)), schema_name="judge_turns")
            except OutputRejected as exc:
                raise OutputRejected(f"judge: {exc.reason}", raw=exc.raw, records=[_record(messages, meta)]) from None
            for score, row in zip(scores, reply.data["turns"]):
                score.score, score.reason = row["score"], row["reason"]
            meta["judge"] = judge_summary(scores, threshold=opts.judge_threshold, rule=opts.judge_rule,
                                          model=judge.model)
        meta["turn_scores"] = [s.to_meta() for s in scores]
        problem = verdict(scores, threshold=opts.judge_threshold, rule=opts.judge_rule)
        if problem:
            raise OutputRejected(problem, records=[_record(messages, meta)])
        return [_record(messages, meta)]


def _exchanges(messages: list[Message]) -> int:
    return sum(1 for m in messages if m["role"] == "assistant")


def _record(messages: list[Message], meta: dict[str, Any]) -> NewRecord:
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
    return NewRecord(key="systemchat:" + digest[:32], conversation=list(messages), meta=dict(meta))
