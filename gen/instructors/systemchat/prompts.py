"""The words sent to the teachers: system-prompt categories, the prompt writer, the simulated user, the judge."""
from __future__ import annotations

CATEGORIES: dict[str, str] = {
    "mechanical": "a mechanical constraint on every reply that code could check: never use a given letter, "
                  "answer only in capitals, answer in exactly N words, phrase every answer as a question, "
                  "answer only with JSON, start every reply with a fixed word",
    "persona": "a persona or roleplaying character the assistant must stay in: its name, voice, manner of "
               "speaking, what it knows and does not know (a Victorian butler, a cat who only meows, a "
               "grumpy lighthouse keeper)",
    "guardrails": "guardrails: topics the assistant must refuse or redirect, information it must never "
                  "reveal, how it declines (a bank's assistant that never gives investment advice, a tutor "
                  "that never gives the final answer)",
    "purpose": "a narrow purpose: the assistant exists for one product, service or task and steers every "
               "conversation back to it",
    "behavioural_rules": "behavioural rules: tone, formality, how to treat the user, what to always or never "
                         "do (always ask one clarifying question first, never use exclamation marks, "
                         "address the user as 'Captain')",
    "output_format": "an output format for every reply: bullet lists only, a fixed template with headings, "
                     "Markdown tables, a haiku, numbered steps, a TL;DR line first",
    "procedural": "procedural instructions: a fixed sequence of steps the assistant follows in each reply or "
                  "across the conversation (greet, collect three facts, then summarise and confirm)",
    "functions": "functions the assistant may call: describe one to three tools with their parameters and "
                 "when to call them, and how the assistant must write a call (e.g. a JSON object on its own "
                 "line) before answering",
}

CONSTRAINT_HELP = (
    "If and only if the prompt imposes a rule that code can verify on every reply, give it in `constraint` "
    "as one of these ids: " + ", ".join([
        "no_letter:X", "all_caps", "all_lowercase", "word_count:N", "max_words:N", "ends_with_question",
        "json_only", "only_words:word1,word2", "starts_with:TEXT", "sentence_count:N", "max_sentences:N",
        "no_exclamation", "address_as:NAME", "bullets_only", "max_bullets:N", "allowed_punctuation:CHARS",
        "acrostic:WORD"]) + " (a list when there are several); otherwise null.")

PROMPT_WRITER = """Write {n} different system prompts for an AI assistant, in this category:
{category}: {description}.

A system prompt is the hidden instruction that sets up a chat assistant before the user's first message.
Each one must be self-contained, concrete and specific, 1 to 6 sentences, written to the assistant ("You
are...", "Always..."), and demanding enough that following it over a long conversation takes discipline.
Vary the domains, the wording and the length; do not repeat one another or the examples.
{constraint_help}
{examples}This is batch {batch} of the collection."""


def prompt_writer_message(*, n: int, category: str, batch: int, examples: list[str]) -> str:
    description = CATEGORIES.get(category, category)
    shown = "".join(f"- {e}\n" for e in examples)
    return PROMPT_WRITER.format(
        n=n, category=category, description=description, batch=batch, constraint_help=CONSTRAINT_HELP,
        examples=f"Examples of the category (do not copy them):\n{shown}" if examples else "")


DEFAULT_INTENTS = [
    "plan a cheap week of vegetarian dinners", "understand how compound interest works",
    "fix a Python function that returns None instead of a list", "write a short birthday poem for a grandmother",
    "prepare for a job interview for a junior data analyst role", "learn the basics of chess openings",
    "decide between two job offers in different cities", "get a gentle workout routine for bad knees",
    "understand why the sky is blue, explained for a ten-year-old", "draft a polite complaint to a landlord",
    "plan a three-day trip to Lisbon on a budget", "learn how to care for a new houseplant",
    "understand the causes of the French Revolution", "get feedback on a startup idea for a dog-walking app",
    "translate a few travel phrases into Spanish", "make small talk and see where the conversation goes",
    "get the assistant to ignore its instructions and talk normally",
    "ask about something far outside the assistant's purpose",
    "push the assistant to reveal its hidden instructions",
]

USER_STYLES = [
    "curious and friendly, asks follow-up questions", "terse: short messages, little punctuation",
    "sceptical: questions the answers and asks for justification", "chatty: shares personal details",
    "confused at first, needs things rephrased", "impatient and direct", "playful, likes to joke",
    "careful and detailed, writes long messages",
]

USER_SIMULATOR = """You are role-playing a human user chatting with an AI assistant. You are the user, not the
assistant: each time, write only the user's next message.
Your goal in this conversation: {intent}.
Your manner: {style}.
Rules:
- Write a single message, in the first person, as a real person would type it: no "User:" label, no quotation
  marks around it, no stage directions, no notes about the conversation.
- React to what the assistant just said: follow up, push back, ask for more, or move on as your goal needs.
- Never copy the assistant's words back to it, and never say you are an AI or that this is a simulation.
{ending}"""

ENDING_NOT_YET = "- Keep the conversation going: do not say goodbye yet."
ENDING_ALLOWED = ("- You may now end the conversation: once your goal is met, or a real user would leave, reply "
                  "with exactly {sentinel} and nothing else. Otherwise keep going.")

USER_KICKOFF = "(The chat window is open. Write your first message to the assistant.)"


def user_simulator_system(*, intent: str, style: str, may_end: bool, sentinel: str) -> str:
    ending = ENDING_ALLOWED.format(sentinel=sentinel) if may_end else ENDING_NOT_YET
    return USER_SIMULATOR.format(intent=intent, style=style, ending=ending)


JUDGE_SYSTEM = """You are grading how faithfully an AI assistant followed its system prompt across a conversation.
Score each assistant turn separately, from 1 to 5:
5 - follows the system prompt completely in this turn (and is a sensible reply to the user);
4 - follows it, with a negligible slip;
3 - follows it partly: a noticeable slip in wording, format, persona or rules;
2 - mostly ignores it;
1 - breaks it outright (drops the persona, breaks the format or a rule, reveals what it must not).
When there is no system prompt, grade each turn on being helpful, honest, coherent and consistent with the
earlier turns. Judge every rule literally, including odd or mechanical ones. Give a one-sentence reason for
every score. Return exactly one entry per assistant turn, in order."""


def judge_message(system_prompt: str | None, conversation: list[dict[str, str]]) -> str:
    given = f"<<<\n{system_prompt}\n>>>" if system_prompt else "(none: the assistant had no system prompt)"
    lines = [f"The system prompt the assistant was given:\n{given}", "The conversation:"]
    turn = 0
    for message in conversation:
        if message["role"] == "system":
            continue
        if message["role"] == "user":
            turn += 1
            lines.append(f"[user, turn {turn}]\n{message['content']}")
        else:
            lines.append(f"[assistant, turn {turn}]\n{message['content']}")
    lines.append(f"Score each of the {turn} assistant turns, in order.")
    return "\n\n".join(lines)
