"""Which of two answers to the same context is the better one: near-identical answers never make a pair;
then the system prompt's checkable rules (`by_rules`): an answer that breaks one never wins, and when only
one of the two keeps them it wins outright; then the reroll wins (`reroll`), the longer one wins by a margin
(`length`), or a judge decides twice with the answers swapped and both verdicts must agree (`judge`). The
judge is shown the system prompt on its own and told that obeying it comes first.

Each decision is a `Decision`: the winner ("original" | "reroll"), or None with the reason the pair is dropped,
and the verdicts behind it (kept in the record's meta).
"""
from __future__ import annotations

import asyncio
import difflib
from dataclasses import dataclass, field
from typing import Any

from gen.errors import OutputRejected
from gen.schemas import load_schema
from gen.text import words
from gen.types import Message

SIDES = ("original", "reroll")

DEFAULT_JUDGE_CRITERIA = ("helpfulness, correctness, depth and detail, creativity, and natural writing "
                          "free of cliches, filler and needless disclaimers")

JUDGE_PROMPT = """Two assistants answered the last message of the conversation below. Decide which answer is better, considering {criteria}.

Both assistants were given this system prompt:
<system_prompt>
{system}
</system_prompt>
Obeying the system prompt comes first: an answer that breaks any of its rules (length, format, persona, tone, what it must or must not say) loses to one that keeps them, however good it is otherwise; a longer answer is not better when the system prompt asks for brevity.

<conversation>
{conversation}
</conversation>

<answer_a>
{a}
</answer_a>

<answer_b>
{b}
</answer_b>

Judge the content, not the order the answers are shown in. Give your `reasoning` (a few sentences comparing them) first, then the `winner`: "A", "B", or "tie" when neither is clearly better."""


@dataclass
class Decision:
    winner: str | None              # "original" | "reroll" | None (dropped)
    reason: str | None = None       # why the pair is dropped
    verdicts: list[dict[str, Any]] = field(default_factory=list)


def similarity(a: str, b: str, threshold: float) -> float:
    """difflib ratio of the two texts' normalised word sequences (1.0: the same words in the same order).

    When difflib's cheap upper bounds are already below `threshold` the (quadratic) exact ratio is skipped
    and the upper bound is returned: the texts are then certainly not near-identical."""
    wa, wb = words(a), words(b)
    if wa == wb:
        return 1.0
    matcher = difflib.SequenceMatcher(None, wa, wb, autojunk=False)
    for bound in (matcher.real_quick_ratio, matcher.quick_ratio):
        upper = bound()
        if upper < threshold:
            return round(upper, 4)
    return round(matcher.ratio(), 4)


def by_length(original: str, reroll: str, margin: float) -> Decision:
    """The longer answer wins when it is at least `margin` (0.2 = 20%) longer than the other."""
    n_original, n_reroll = len(original.strip()), len(reroll.strip())
    verdict = {"policy": "length", "original_chars": n_original, "reroll_chars": n_reroll, "min_margin": margin}
    if n_reroll >= n_original * (1 + margin) and n_reroll > n_original:
        return Decision("reroll", verdicts=[verdict])
    if n_original >= n_reroll * (1 + margin) and n_original > n_reroll:
        return Decision("original", verdicts=[verdict])
    return Decision(None, f"lengths too close to choose: original {n_original} chars, reroll {n_reroll} chars "
                          f"(one must be at least {margin:.0%} longer)", [verdict])


def render_context(context: list[Message]) -> str:
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in context if m["role"] != "system")


def system_prompt_of(context: list[Message]) -> str | None:
    return next((m["content"] for m in context if m["role"] == "system"), None)


def judge_messages(context: list[Message], a: str, b: str, criteria: str) -> list[Message]:
    system = system_prompt_of(context) or "(none: the assistants had no system prompt)"
    return [{"role": "user", "content": JUDGE_PROMPT.format(criteria=criteria, system=system, a=a, b=b,
                                                            conversation=render_context(context))}]


def by_rules(problems: dict[str, list[str]]) -> Decision | None:
    """The decision the system prompt's rules alone make (`problems`: side -> what each answer breaks), or None
    when both answers keep every rule and the `choose` policy decides."""
    broken = [side for side in SIDES if problems[side]]
    if not broken:
        return None
    verdict = {"policy": "rules", **{f"{side}_breaks": problems[side] for side in SIDES}}
    if len(broken) == 2:
        return Decision(None, f"both answers break the system prompt (original: {problems['original'][0]}; "
                              f"reroll: {problems['reroll'][0]})", [verdict])
    return Decision("reroll" if broken == ["original"] else "original", verdicts=[verdict])


async def by_judge(judge: Any, context: list[Message], answers: dict[str, str], criteria: str) -> Decision:
    """Ask the judge twice, the original first then the reroll first; keep the pair only if both verdicts
    prefer the same answer (a tie in either drops it). Both calls run at once."""
    orders = [SIDES, tuple(reversed(SIDES))]
    schema = load_schema("dpo_judge")
    results = await asyncio.gather(*(
        judge.chat(judge_messages(context, answers[first], answers[second], criteria), schema=schema,
                   schema_name="dpo_judge")
        for first, second in orders), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    verdicts = []
    for (first, second), reply in zip(orders, results):
        winner = reply.data["winner"]
        preferred = {"A": first, "B": second}.get(winner, "tie")
        verdicts.append({"policy": "judge", "judge": judge.name, "model": judge.model, "answer_a": first,
                         "answer_b": second, "winner": winner, "preferred": preferred,
                         "reasoning": reply.data["reasoning"]})
    preferred = [v["preferred"] for v in verdicts]
    if "tie" in preferred:
        return Decision(None, f"judge: tie (original shown first: {preferred[0]}; reroll shown first: "
                              f"{preferred[1]})", verdicts)
    if preferred[0] != preferred[1]:
        return Decision(None, f"judge verdicts disagree when the answers swap places (original shown first: "
                              f"{preferred[0]} wins; reroll shown first: {preferred[1]} wins)", verdicts)
    return Decision(preferred[0], verdicts=verdicts)


def rejected_with(records: list, exc: OutputRejected, prefix: str) -> OutputRejected:
    """The same rejection, its reason prefixed, keeping `records` for review."""
    return OutputRejected(f"{prefix}: {exc.reason}", raw=exc.raw, records=records)
