"""`dpo_reroll`: preference pairs from conversations that already exist.

For each source conversation (an earlier job's records, or a JSONL file), the final assistant turn (or every
one, `turns: every`) is answered again by the `reroll` teacher under a stronger instruction (longer, more
detailed, more creative, less cliched). The original and the reroll then make a pair, once a winner is chosen
(`choose`): the reroll (as bagel did), the judge's verdict given twice with the answers swapped, or the longer
answer by a margin. Near-identical answers never make a pair. A pair is a record of kind "pair" keyed by
uuid5 of its context, so a rerun never stores one twice; a dropped pair is kept as a rejected record with
the reason, for review (`gen export JOB --rejected --meta`).

The reroll instruction is used only to elicit the reroll: the pair's prompt is the source context as it was.

Obedience comes before length. The source's checkable constraints (the ids in its record's meta, else those
its system prompt states in plain words: `systemchat.prompt_constraints`) and the turn filters are checked on
both answers before any policy runs: an answer that breaks them is never chosen, and when only one answer
keeps them it wins outright. `choose: reroll` and `choose: length` prefer the longer answer, so a job whose
sources carry a length or format constraint (word limits, sentence limits, json_only, bullets...) with
either is refused when it is loaded, naming `choose: judge`. Sources an earlier job kept as `code_check:
unchecked`/`failed` or `verified: false` are not rerolled unless `include` names them.
"""
from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from gen.errors import JobFileError, OutputRejected
from gen.instructors.base import Instructor, InstructorOptions, PlannedUnit, UnitInput
from gen.instructors.dpo_reroll.choosing import (DEFAULT_JUDGE_CRITERIA, Decision, by_judge, by_length, by_rules,
                                                 rejected_with, similarity, system_prompt_of)
from gen.instructors.systemchat.constraints import LIMITS_LENGTH_OR_FORM, constraint_problems, parse_constraints
from gen.instructors.systemchat.filters import TurnFilter
from gen.instructors.systemchat.prompt_constraints import constraints_in_prompt
from gen.sources import SourceConversation, read_conversation_file
from gen.types import Message, NewRecord, Teacher

log = logging.getLogger("gen.instructors.dpo_reroll")

PAIR_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://gen.dev/instructors/dpo_reroll")

DEFAULT_REROLL_INSTRUCTION = (
    "Answer the user's last message again, and better than a typical answer would: longer and more detailed, "
    "more creative and vivid, and still accurate. Avoid cliches, stock phrases, filler and disclaimers, and do "
    "not mention these instructions.")


class DpoRerollOptions(InstructorOptions):
    source_job: str | None = Field(default=None, description="An earlier job (id or name) whose conversations "
                                   "are rerolled.")
    source_file: str | None = Field(default=None, description="A JSONL file of ShareGPT or OpenAI-messages "
                                    "conversations, relative to the job file.")
    turns: Literal["last", "every"] = Field(default="last", description="Reroll the final assistant turn, or every "
                                            "assistant turn (each in its own context, each its own pair).")
    reroll_instruction: str = Field(default=DEFAULT_REROLL_INSTRUCTION, min_length=1,
                                    description="What the reroll teacher is asked for on top of the conversation.")
    reroll_instruction_in: Literal["system", "user"] = Field(
        default="system", description="system: appended to the system message (one is added if there is none); "
        "user: prepended to the last user turn.")
    choose: Literal["reroll", "judge", "length"] = Field(default="reroll",
                                                         description="How the chosen answer is picked.")
    min_length_margin: float = Field(default=0.2, ge=0, description="choose: length: the longer answer must be this "
                                     "much longer (0.2 = 20%), or the pair is dropped.")
    max_similarity: float = Field(default=0.9, gt=0, le=1, description="Answers at least this similar (difflib "
                                  "ratio of normalised words) never make a pair.")
    judge_criteria: str = Field(default=DEFAULT_JUDGE_CRITERIA, min_length=1, description="choose: judge: what the "
                                "judge weighs.")
    count: int | None = Field(default=None, gt=0, description="At most this many pairs are planned.")
    include: list[Literal["unchecked", "unverified"]] = Field(
        default_factory=list, description="Also reroll source records kept as code_check: unchecked/failed "
        "(unchecked) or verified: false (unverified); by default they are not used.")

    @model_validator(mode="after")
    def _one_source(self) -> "DpoRerollOptions":
        if bool(self.source_job) == bool(self.source_file):
            raise ValueError("give exactly one of `source_job` or `source_file`")
        return self


def pair_key(context: list[Message]) -> str:
    """uuid5 of the context (system, user and earlier turns) the answers reply to."""
    return str(uuid.uuid5(PAIR_NAMESPACE, json.dumps(context, sort_keys=True, ensure_ascii=False)))


def unusable_because(meta: dict[str, Any], include: list[str]) -> str | None:
    """Why a source record is not rerolled: its code was not (or not successfully) checked, or its answer was
    disputed; None when it is usable or `include` names its kind."""
    if meta.get("code_check") in ("unchecked", "failed") and "unchecked" not in include:
        return "unchecked"
    if meta.get("verified") is False and "unverified" not in include:
        return "unverified"
    return None


def source_constraints(source: SourceConversation, context: list[Message]) -> tuple[list[str], str | None]:
    """The constraint ids an answer in this context must keep, and where they came from (meta | system prompt)."""
    declared = source.meta.get("constraints")
    if declared:
        return [c.id for c in parse_constraints(declared)], "meta"
    stated = constraints_in_prompt(system_prompt_of(context))
    return [c.id for c in stated], "system prompt" if stated else None


def reroll_messages(context: list[Message], instruction: str, where: str) -> list[Message]:
    """The context as the reroll teacher sees it, with the instruction added (`where`: system | user)."""
    messages = [dict(m) for m in context]
    if where == "user":
        messages[-1]["content"] = f"{instruction}\n\n{messages[-1]['content']}"
    elif messages[0]["role"] == "system":
        messages[0]["content"] = f"{messages[0]['content']}\n\n{instruction}"
    else:
        messages.insert(0, {"role": "system", "content": instruction})
    return messages  # type: ignore[return-value]


class DpoRerollInstructor(Instructor[DpoRerollOptions]):
    name = "dpo_reroll"
    summary = ("Preference pairs: existing answers rerolled under a stronger prompt; the reroll, a judge "
               "(asked twice, order swapped; only with choose: judge) or length picks the winner.")
    Options = DpoRerollOptions
    teacher_roles = ("reroll", "judge")

    @property
    def calls_per_unit(self) -> dict[str, float]:  # type: ignore[override]
        """A reroll per answer rerolled (the last one, or about two with turns: every); with choose: judge, the
        judge twice (the answers swapped)."""
        opts = self.options
        return {"reroll": 1.0 if opts.turns == "last" else 2.0, "judge": 2.0 if opts.choose == "judge" else 0.0}

    @classmethod
    def required_teachers(cls, options: DpoRerollOptions) -> dict[str, str]:
        """`reroll` is always needed, `judge` only with choose: judge."""
        needed = ["reroll"] + (["judge"] if options.choose == "judge" else [])
        return {role: f"teachers: instructor '{cls.name}' needs a teacher named '{role}'"
                      f"{' (choose: judge)' if role == 'judge' else ''} (it uses: {', '.join(needed)})"
                for role in needed}

    # planning ---------------------------------------------------------------------------------------------
    def plan(self) -> Iterator[PlannedUnit]:
        """A unit per (source, assistant turn to reroll), keyed by uuid5 of its context; a context seen before
        is planned once. A source file's bad lines become units of their own that settle as rejected with the
        reason (no call made), so `gen status` and the database keep them."""
        opts = self.options
        if opts.source_job:
            sources, bad_lines = self.earlier_conversations(opts.source_job, option="instructor.source_job"), []
        else:
            read = read_conversation_file(self.job.resolve_path(opts.source_file or ""), shown_as=opts.source_file
                                          or "", label=self.job.source)
            sources, bad_lines = read.conversations, read.bad_lines
        usable, left_out = [], {"unchecked": 0, "unverified": 0}
        for source in sources:
            because = unusable_because(source.meta, opts.include)
            if because:
                left_out[because] += 1
            else:
                usable.append(source)
        if sources and not usable:
            raise JobFileError(self.job.source, [
                f"instructor.source_job: none of the {len(sources)} conversations of job '{opts.source_job}' can be "
                f"used: {self._left_out(left_out)}; add them with `include: [unchecked, unverified]`"])
        if any(left_out.values()):
            log.warning("dpo_reroll: %s of job '%s' not rerolled (`include: [unchecked, unverified]` uses them)",
                        self._left_out(left_out), opts.source_job)
        seen: set[str] = set()
        repeated = 0
        brevity: list[tuple[str, list[str]]] = []
        for source in usable:
            conversation = source.conversation
            turns = [i for i, m in enumerate(conversation) if m["role"] == "assistant"]
            for index in turns if opts.turns == "every" else turns[-1:]:
                context = conversation[:index]
                key = pair_key(context)
                if key in seen:
                    repeated += 1
                    continue
                if opts.count and len(seen) >= opts.count:
                    break
                seen.add(key)
                constraints, found_in = source_constraints(source, context)
                limiting = [c for c in constraints if c.split(":")[0] in LIMITS_LENGTH_OR_FORM]
                if limiting and opts.choose in ("reroll", "length"):
                    brevity.append((self._where(source), limiting))
                    continue
                yield PlannedUnit(key=key, payload={"context": context, "original": conversation[index],
                                                    "original_by": source.author, "constraints": constraints,
                                                    "constraints_from": found_in,
                                                    "source": {**source.link, "turn": index}})
        if brevity:
            where, limiting = brevity[0]
            raise JobFileError(self.job.source, [
                f"instructor.choose: '{opts.choose}' prefers the longer answer, but {len(brevity)} source "
                f"conversation(s) carry a length or format constraint ({', '.join(limiting)} in {where}); use "
                "`choose: judge` (the judge sees the system prompt), or sources without such constraints"])
        if repeated:
            log.warning("dpo_reroll: %d source turns repeat a context already planned; each context is "
                        "rerolled once", repeated)
        for bad in bad_lines:
            yield PlannedUnit(key=f"skipped-line-{bad.line:07d}", payload={"skipped": {
                "file": bad.file, "line": bad.line, "reason": bad.reason}})

    @staticmethod
    def _left_out(counts: dict[str, int]) -> str:
        said = {"unchecked": "with code_check unchecked/failed", "unverified": "with verified: false"}
        return " and ".join(f"{n} {said[kind]}" for kind, n in counts.items() if n) or "none"

    @staticmethod
    def _where(source: SourceConversation) -> str:
        link = source.link
        return f"record {link['record_id']}" if "record_id" in link else f"{link.get('file')} line {link.get('line')}"

    # one pair ---------------------------------------------------------------------------------------------
    async def run(self, unit: UnitInput, teachers: Mapping[str, Teacher]) -> list[NewRecord]:
        opts = self.options
        p = unit.payload
        if "skipped" in p:
            s = p["skipped"]
            raise OutputRejected(f"source {s['file']} line {s['line']} skipped: {s['reason']}")
        context: list[Message] = p["context"]
        original: Message = {"role": "assistant", "content": p["original"]["content"]}
        teacher = teachers["reroll"]
        constraints = parse_constraints(p.get("constraints") or [])
        instruction = opts.reroll_instruction
        if constraints:
            instruction += (" Whatever you change, keep every rule of the system prompt: it comes before "
                            "anything asked here.")
        reply = await teacher.chat(reroll_messages(context, instruction, opts.reroll_instruction_in))
        reroll: Message = {"role": "assistant", "content": reply.text.strip()}
        authors = {"original": {"by": "original", **(p.get("original_by") or {})},
                   "reroll": {"by": "reroll", "teacher": teacher.name, "model": teacher.model}}
        answers = {"original": original, "reroll": reroll}
        similar = similarity(original["content"], reroll["content"], opts.max_similarity)
        turn_filter = TurnFilter()
        problems = {side: [*constraint_problems(constraints, answer["content"]),
                           *filter(None, [turn_filter.problem(answer["content"])])]
                    for side, answer in answers.items()}
        meta = {"prompt": context, "choose": opts.choose, "source": p["source"], "similarity": similar,
                "constraints": [c.id for c in constraints], "constraints_from": p.get("constraints_from"),
                "breaks": problems}

        def dropped(reason: str, verdicts: list[dict[str, Any]]) -> OutputRejected:
            review = NewRecord(key=unit.key, conversation=[*context, reroll], meta={
                **meta, "original": original, "reroll": reroll, "original_teacher": authors["original"],
                "reroll_teacher": authors["reroll"], "verdicts": verdicts})
            return OutputRejected(reason, records=[review])

        if similar >= opts.max_similarity:
            raise dropped(f"the reroll is nearly identical to the original (similarity {similar:.2f} >= "
                          f"{opts.max_similarity})", [])
        ruled = by_rules(problems)
        if ruled is not None:
            decision = ruled
        elif opts.choose == "reroll":
            decision = Decision("reroll")
        elif opts.choose == "length":
            decision = by_length(original["content"], reroll["content"], opts.min_length_margin)
        else:
            try:
                decision = await by_judge(teachers["judge"], context, {k: v["content"] for k, v in answers.items()},
                                          opts.judge_criteria)
            except OutputRejected as exc:
                raise rejected_with(dropped("judge", []).records, exc, "judge") from None
        if decision.winner is None:
            raise dropped(decision.reason or "no winner", decision.verdicts)
        loser = "original" if decision.winner == "reroll" else "reroll"
        return [NewRecord(key=unit.key, kind="pair", conversation=[*context, answers[decision.winner]], meta={
            **meta, "chosen": answers[decision.winner], "rejected": answers[loser],
            "chosen_teacher": authors[decision.winner], "rejected_teacher": authors[loser],
            "verdicts": decision.verdicts})]
