"""Prompt templates the seed models were trained on, rendering a conversation as one text for completion-style
training (`gen export --format text --template NAME`, or every template with `--all-templates`, as bagel did).

A conversation is an optional system message followed by alternating user and assistant turns. Each template
writes the system prompt first, then every exchange:

- `airoboros`: airoboros 2.2+ (vicuna style, newlines between parts), "A chat." when there is no system prompt:
  `A chat.\\nUSER: ...\\nASSISTANT: ...`
- `llama2`: Llama-2 chat, `<s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {assistant} </s>`, then
  `<s>[INST] {user} [/INST] {assistant} </s>` for each further exchange.
- `alpaca`: "Below is an instruction ...", `### Instruction:` (system prompt, then the user turn) and
  `### Response:` blocks, as bagel wrote it.
- `chatml`: `<|im_start|>{role}\\n{content}<|im_end|>` for every message, one per line.
- `human-response`: the system prompt, then `### HUMAN:` / `### RESPONSE:` blocks.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

Messages = Sequence[dict[str, str]]

AIROBOROS_DEFAULT_SYSTEM = "A chat."
ALPACA_PREAMBLE = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                   "the request.")


class NotAChat(ValueError):
    """The conversation is not system?, then user/assistant exchanges: no template can render it."""


def exchanges(conversation: Messages) -> tuple[str | None, list[tuple[str, str]]]:
    """(system prompt or None, [(user, assistant), ...])."""
    system = None
    turns = list(conversation)
    if turns and turns[0]["role"] == "system":
        system, turns = turns[0]["content"], turns[1:]
    roles = [m["role"] for m in turns]
    if not turns or len(turns) % 2 or roles != ["user", "assistant"] * (len(turns) // 2):
        raise NotAChat("a conversation must be an optional system prompt, then user/assistant exchanges")
    return system, [(turns[i]["content"], turns[i + 1]["content"]) for i in range(0, len(turns), 2)]


def airoboros(conversation: Messages) -> str:
    system, pairs = exchanges(conversation)
    lines = [system or AIROBOROS_DEFAULT_SYSTEM]
    for user, assistant in pairs:
        lines += [f"USER: {user}", f"ASSISTANT: {assistant}"]
    return "\n".join(lines)


def llama2(conversation: Messages) -> str:
    system, pairs = exchanges(conversation)
    out = []
    for i, (user, assistant) in enumerate(pairs):
        head = f"<<SYS>>\n{system}\n<</SYS>>\n\n" if i == 0 and system else ""
        out.append(f"<s>[INST] {head}{user.strip()} [/INST] {assistant.strip()} </s>")
    return "".join(out)


def alpaca(conversation: Messages) -> str:
    system, pairs = exchanges(conversation)
    blocks = [ALPACA_PREAMBLE]
    for i, (user, assistant) in enumerate(pairs):
        instruction = f"{system}\n{user}" if i == 0 and system else user
        blocks += [f"### Instruction:\n{instruction}", f"### Response:\n{assistant}"]
    return "\n\n".join(blocks)


def chatml(conversation: Messages) -> str:
    exchanges(conversation)  # the same shape check as the others
    return "\n".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>" for m in conversation)


def human_response(conversation: Messages) -> str:
    system, pairs = exchanges(conversation)
    blocks = [system] if system else []
    for user, assistant in pairs:
        blocks += [f"### HUMAN:\n{user}", f"### RESPONSE:\n{assistant}"]
    return "\n\n".join(blocks)


TEMPLATES: dict[str, Callable[[Messages], str]] = {
    "airoboros": airoboros, "llama2": llama2, "alpaca": alpaca, "chatml": chatml, "human-response": human_response,
}
