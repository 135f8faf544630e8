"""The judge: one call per finished conversation scoring every assistant turn 1-5, and the verdict.

Deterministic constraint checks sit above the judge: a turn that breaks a checkable constraint counts as a 1
whatever the judge gave it, so a lenient judge cannot let it through.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from gen.instructors.systemchat.prompts import JUDGE_SYSTEM, judge_message
from gen.schemas import load_schema


def judge_schema(n: int) -> dict[str, Any]:
    """`schemas/judge_turns.schema.json` asking for exactly n scored turns."""
    schema = copy.deepcopy(load_schema("judge_turns"))
    schema["properties"]["turns"].update(minItems=n, maxItems=n)
    return schema


def judge_messages(system_prompt: str | None, conversation: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": judge_message(system_prompt, conversation)}]


@dataclass
class TurnScore:
    turn: int
    score: int | None = None            # the judge's, None when there is no judge
    reason: str | None = None
    violations: list[str] = field(default_factory=list)  # deterministic constraint checks that failed

    @property
    def effective(self) -> int | None:
        return 1 if self.violations else self.score

    def to_meta(self) -> dict[str, Any]:
        row: dict[str, Any] = {"turn": self.turn}
        if self.score is not None:
            row.update(score=self.score, reason=self.reason)
        if self.violations:
            row["violations"] = self.violations
        return row


def verdict(turns: list[TurnScore], *, threshold: float, rule: str) -> str | None:
    """Why the conversation is rejected, or None to keep it.

    A constraint violation always rejects. Then, with `rule: any_turn`, every judged turn must score at least
    `threshold`; with `rule: mean`, the mean of the turns' scores must reach it."""
    broken = [t for t in turns if t.violations]
    if broken:
        first = broken[0]
        more = f" (and {len(broken) - 1} more turns)" if len(broken) > 1 else ""
        judged = f"; judge scored it {first.score}" if first.score is not None else ""
        return f"constraint broken at turn {first.turn}: {first.violations[0]}{judged}{more}"
    scored = [t for t in turns if t.score is not None]
    if not scored:
        return None
    if rule == "mean":
        mean = sum(t.score for t in scored) / len(scored)
        return f"judge: mean score {mean:.2f} < {threshold:g}" if mean < threshold else None
    low = [t for t in scored if t.score < threshold]
    if low:
        worst = min(low, key=lambda t: (t.score, t.turn))
        return (f"judge: {len(low)} of {len(scored)} turns scored under {threshold:g}; turn {worst.turn} scored "
                f"{worst.score}: {worst.reason}")
    return None


def judge_summary(turns: list[TurnScore], *, threshold: float, rule: str, model: str | None) -> dict[str, Any]:
    scores = [t.score for t in turns if t.score is not None]
    return {"model": model, "rule": rule, "threshold": threshold, "scores": scores,
            "mean": round(sum(scores) / len(scores), 3) if scores else None,
            "min": min(scores) if scores else None}
