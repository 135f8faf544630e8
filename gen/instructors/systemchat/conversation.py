"""One conversation between a simulated user and the assistant, one `chat()` call per turn.

Each call is journaled before the next one is made, so a conversation interrupted at turn 5 replays turns 1-4
from the journal and pays again only from turn 5 on, on whichever worker picks the unit up.

The simulated user never sees the system prompt: it gets its goal, a manner, and the conversation so far with
the roles flipped (its own earlier messages as `assistant`, the assistant's as `user`). Once `min_turns`
exchanges are done it is told it may end the conversation by answering with the sentinel; the sentinel and
whatever came with it never reach the record. A sentinel before `min_turns` is refused like any bad turn
(asked again, then the conversation is rejected).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gen.errors import OutputRejected
from gen.instructors.systemchat.constraints import Constraint, constraint_problems
from gen.instructors.systemchat.filters import TurnFilter
from gen.instructors.systemchat.prompts import USER_KICKOFF, user_simulator_system
from gen.types import Message


@dataclass(frozen=True)
class ConversationPlan:
    system_prompt: str | None
    constraints: list[Constraint]
    turns: int              # exchanges to make unless the user ends earlier
    min_turns: int
    intent: str
    style: str
    sentinel: str
    retry_constraints: bool = True


class ConversationStopped(Exception):
    """A turn could not be had (every attempt refused). `partial` is the well-formed conversation so far,
    ending with the refused assistant reply when there is one, for review."""

    def __init__(self, reason: str, *, raw: str | None, partial: list[Message], turn: int):
        super().__init__(reason)
        self.reason = reason
        self.raw = raw
        self.partial = partial
        self.turn = turn


def has_sentinel(text: str, sentinel: str) -> bool:
    return sentinel.lower() in text.lower()


def clean_user_text(text: str) -> str:
    """A simulated user's message as a person would send it: trimmed, without quotes wrapped around it."""
    text = text.strip()
    for left, right in (('"', '"'), ("\u201c", "\u201d")):
        if len(text) > 2 and text[0] == left and text[-1] == right and left not in text[1:-1]:
            return text[1:-1].strip()
    return text


def flipped(history: list[Message]) -> list[Message]:
    """The conversation as the simulated user sees it: its own turns are the `assistant` ones."""
    swap = {"user": "assistant", "assistant": "user"}
    return [{"role": swap[m["role"]], "content": m["content"]} for m in history]  # type: ignore[typeddict-item]


class Conversation:
    def __init__(self, plan: ConversationPlan, user: Any, assistant: Any, turn_filter: TurnFilter):
        self.plan = plan
        self.user = user
        self.assistant = assistant
        self.filter = turn_filter
        self.history: list[Message] = []
        self.ended_by = "turn_limit"

    def messages(self) -> list[Message]:
        """The record's conversation: system first when there is one."""
        system: list[Message] = [{"role": "system", "content": self.plan.system_prompt}] if self.plan.system_prompt \
            else []
        return system + self.history

    async def run(self) -> list[Message]:
        for turn in range(1, self.plan.turns + 1):
            may_end = turn > self.plan.min_turns
            text = await self._user_turn(turn, may_end)
            if text is None:
                self.ended_by = "user"
                break
            self.history.append({"role": "user", "content": text})
            self.history.append({"role": "assistant", "content": await self._assistant_turn(turn)})
        return self.messages()

    async def _user_turn(self, turn: int, may_end: bool) -> str | None:
        plan = self.plan
        system = user_simulator_system(intent=plan.intent, style=plan.style, may_end=may_end, sentinel=plan.sentinel)
        sent: list[Message] = [{"role": "system", "content": system}, {"role": "user", "content": USER_KICKOFF},
                               *flipped(self.history)]
        previous = self.history[-1]["content"] if self.history else None

        def check(reply) -> str | None:
            if has_sentinel(reply.text, plan.sentinel):
                return None if may_end else (f"the simulated user ended the conversation after {turn - 1} turns, "
                                             f"before min_turns={plan.min_turns}")
            return self.filter.problem(clean_user_text(reply.text), previous=previous, echo_check=True)

        try:
            reply = await self.user.chat(sent, check=check)
        except OutputRejected as exc:
            raise ConversationStopped(f"user turn {turn}: {exc.reason}", raw=exc.raw, partial=self.messages(),
                                      turn=turn) from None
        if has_sentinel(reply.text, plan.sentinel):
            return None
        return clean_user_text(reply.text)

    async def _assistant_turn(self, turn: int) -> str:
        plan = self.plan
        sent = self.messages()

        def check(reply) -> str | None:
            text = reply.text.strip()
            if has_sentinel(text, plan.sentinel):
                return "the end sentinel appears in the assistant's turn"
            problem = self.filter.problem(text)
            if problem or not plan.retry_constraints:
                return problem
            broken = constraint_problems(plan.constraints, text)
            return f"constraint {broken[0]}" if broken else None

        try:
            reply = await self.assistant.chat(sent, check=check)
        except OutputRejected as exc:
            partial = self.messages()
            if exc.raw and exc.raw.strip():
                partial = partial + [{"role": "assistant", "content": exc.raw.strip()}]
            else:
                partial = partial[:-1]  # drop the unanswered user turn
            raise ConversationStopped(f"assistant turn {turn}: {exc.reason}", raw=exc.raw, partial=partial,
                                      turn=turn) from None
        return reply.text.strip()
