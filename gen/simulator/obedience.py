"""Simulated chat turns that keep to a system prompt most of the time, and a judge that can tell.

* `rules_of(system_prompt)`: the mechanical rules a system prompt states, read from its words the way a
  model would (never use the letter X, capitals only, lower case only, exactly N words, at most N words,
  end with a question, JSON only, only the words "a" and "b", begin every reply with "X"), and the character
  it sets ("You are Jeeves, ..." -> Jeeves).
* `assistant_turn(...)`: a reply that obeys every rule, or now and then (BREAK_RATE) breaks them, (DRIFT_RATE)
  drops the character, (DISCLAIMER_RATE) opens with an AI disclaimer; a request to do something shady
  (REFUSAL_TRIGGERS: pick a lock, break into, hack into, ...) is refused, whatever the system prompt.
* `judge_turns(...)`: the judge's scores for a conversation, read from the judge prompt: 5 or 4 for a turn
  that keeps every rule and the character (a refusal of a shady request included), 1 for a broken rule, 2 for a
  dropped character, a disclaimer or a refusal of an ordinary request.
* `user_turn(...)`: the simulated user; once it may end the conversation, it does so now and then (END_RATE)
  with the sentinel it was given.
* `system_prompt_batch(...)`: system prompts of the category asked for, with their constraint ids.

Every choice comes from the `random.Random` given, so a seeded simulator answers the same way every time.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field

from .content import ADJECTIVES, NOUNS, VERBS, plain_text, sentence

BREAK_RATE = 0.2        # a mechanical rule broken (the code checks catch it and ask again)
DRIFT_RATE = 0.08       # a character dropped for a turn (only the judge can tell)
DISCLAIMER_RATE = 0.03  # "As an AI language model, ..." (the turn filters catch it and ask again)
END_RATE = 0.35         # the simulated user ends the conversation once it may

NUMBERS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve "
                                      "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split())}
NUMBERS.update({"thirty": 30, "forty": 40, "fifty": 50})
_NUM = r"(\d+|" + "|".join(sorted(NUMBERS, key=len, reverse=True)) + r")"
_QUOTED = re.compile(r"[\"“']([^\"”']{1,40})[\"”']")
_FILLERS = ("can", "will", "may", "must", "could", "should", "would", "might")
_ARTICLES = ("a", "one", "my", "this", "that", "our", "its", "any")
_LINKS = ("and", "with", "but", "or", "so", "yet", "of", "in", "on", "to", "at", "by", "up")
_GENERIC = {"helpful", "precise", "assistant", "ai", "friendly", "useful", "concise", "honest", "harmless",
            "polite", "chat", "language", "model", "knowledgeable", "smart", "expert", "and", "very"}
DISCLAIMER = "As an AI language model, I do not have personal experiences, but here is what I can say."
REFUSAL_TRIGGERS = ("pick a lock", "pick the lock", "break into", "hack into", "hotwire", "steal ", "shoplift",
                    "without them knowing")
REFUSALS = ("I'm sorry, but I can't help with that.", "I'm sorry, but I cannot help with that request.",
            "I can't assist with that, but I can point you to someone who can.")


@dataclass
class Rules:
    no_letters: list[str] = field(default_factory=list)
    all_caps: bool = False
    all_lowercase: bool = False
    word_count: int | None = None
    max_words: int | None = None
    ends_with_question: bool = False
    json_only: bool = False
    only_words: list[str] = field(default_factory=list)
    starts_with: str | None = None
    character: str | None = None

    @property
    def mechanical(self) -> bool:
        return bool(self.no_letters or self.all_caps or self.all_lowercase or self.word_count or self.max_words
                    or self.ends_with_question or self.json_only or self.only_words or self.starts_with)


def _number(text: str) -> int:
    return int(text) if text.isdigit() else NUMBERS[text.lower()]


def rules_of(system_prompt: str | None) -> Rules:
    """The rules a system prompt states, as far as its words say them plainly."""
    rules = Rules()
    if not system_prompt:
        return rules
    text = " ".join(system_prompt.split())
    low = text.lower()
    rules.no_letters = [m.lower() for m in re.findall(
        r"(?:never use|cannot type|can't type|avoid|without|do not use|don't use) the letter ['\"‘“]?([a-z])\b", low)]
    if re.search(r"\b(?:capital letters|upper[ -]?case|in capitals|all caps|entirely in capitals)\b", low) \
            and not re.search(r"\bno capital letters\b", low):
        rules.all_caps = True
    if re.search(r"\blower[ -]?case only\b|\bno capital letters\b|\bonly lower[ -]?case\b", low):
        rules.all_lowercase, rules.all_caps = True, False
    exact = re.search(rf"\bexactly {_NUM} words\b", low)
    if exact:
        rules.word_count = _number(exact.group(1))
    most = re.search(rf"\b(?:{_NUM} words or fewer|under {_NUM} words|at most {_NUM} words|no more than {_NUM} words|"
                     rf"fewer than {_NUM} words)", low)
    if most:
        n = _number(next(g for g in most.groups() if g))
        rules.max_words = n - 1 if ("under" in most.group(0) or "fewer than" in most.group(0)) else n
    if re.search(r"\bas a question\b|\bend with a question mark\b|\bonly with (?:a single )?(?:guiding )?question\b", low):
        rules.ends_with_question = True
    if re.search(r"\b(?:only|solely)\b[^.]{0,30}\bjson\b|\bjson only\b|\bvalid json only\b", low):
        rules.json_only = True
    if re.search(r"\bonly (?:say|meow|bark)|\bsolely of the words\b|\bonly the words\b", low):
        sentence_with = next((s for s in re.split(r"(?<=[.!?])\s+", text)
                              if re.search(r"only|solely", s, re.I) and _QUOTED.search(s)), "")
        rules.only_words = [w.lower() for w in _QUOTED.findall(sentence_with)] or \
            (["meow"] if "meow" in low else [])
    start = re.search(r"\b(?:begin|start) every reply with (?:the word |a single line beginning )?[\"“]([^\"”]+)[\"”]"
                      r"( followed by a comma)?", text, re.I)
    if start:
        rules.starts_with = start.group(1) + ("," if start.group(2) else "")
    you_are = re.match(r"\s*[Yy]ou are ([A-Z][\w.]+(?: [A-Z][\w.]+)?)\b", text) or \
        re.search(r"\byou are (?:a|an|the) ([\w -]{3,40}?)(?:[.,;]| who| that| for| on| of)", text, re.I)
    if you_are and not rules.mechanical and set(you_are.group(1).lower().split()) - _GENERIC:
        rules.character = you_are.group(1).strip()
    return rules


def _pool(words: tuple[str, ...] | list[str], banned: list[str]) -> list[str]:
    return [w for w in words if not any(letter in w for letter in banned)] or ["hmm"]


def _words(rng: random.Random, n: int, banned: list[str]) -> list[str]:
    """n plain words (no digits, no punctuation) that avoid the banned letters."""
    adj, noun, verb = _pool(ADJECTIVES, banned), _pool(NOUNS, banned), _pool(VERBS, banned)
    fill, art, link = _pool(_FILLERS, banned), _pool(_ARTICLES, banned), _pool(_LINKS, banned)
    out: list[str] = []
    cycle = (art, adj, noun, fill, verb, art, noun, link)
    while len(out) < n:
        out.append(rng.choice(cycle[len(out) % len(cycle)]))
    return out[:n]


def obedient(rules: Rules, rng: random.Random, user_text: str) -> str:
    """A reply that keeps every rule."""
    banned = rules.no_letters
    if rules.only_words:
        return " ".join(rng.choice(rules.only_words) for _ in range(rng.randint(2, 6)))
    if rules.json_only:
        body = " ".join(_words(rng, rng.randint(6, 12), banned))
        return json.dumps({"answer": body[0].upper() + body[1:] + ".", "confidence": round(rng.uniform(0.5, 0.95), 2)})
    prefix = rules.starts_with.split() if rules.starts_with else []
    if rules.word_count or rules.max_words or banned:
        target = rules.word_count or rng.randint(max(3, (rules.max_words or 24) // 2), rules.max_words or 24)
        words = _words(rng, max(1, target - len(prefix)), banned)
        text = " ".join(words)
        text = text[0].upper() + text[1:] + ("?" if rules.ends_with_question else ".")
    else:
        text = plain_text(rng, user_text)
        if rules.ends_with_question:
            text = text.rstrip(".!") + ", wouldn't you agree?" if rng.random() < 0.5 else \
                text + " What " + " ".join(_words(rng, 4, banned)[1:]) + " next?"
    if prefix:
        text = rules.starts_with + " " + text
    if rules.all_caps:
        text = text.upper()
    elif rules.all_lowercase:
        text = text.lower()
    return text


def disobedient(rules: Rules, rng: random.Random, user_text: str) -> str:
    """A reply that forgets the rules: plain text, in ordinary case, of whatever length."""
    text = plain_text(rng, user_text)
    if rules.no_letters and not any(letter in text.lower() for letter in rules.no_letters):
        text += f" ({rules.no_letters[0] * 3})"
    return text


def assistant_turn(system_prompt: str | None, rng: random.Random, user_text: str) -> str:
    """The simulated assistant's reply to the user under `system_prompt`."""
    rules = rules_of(system_prompt)
    draw = rng.random()
    if any(trigger in user_text.lower() for trigger in REFUSAL_TRIGGERS):
        return rng.choice(REFUSALS)
    if rules.mechanical:
        if draw < DISCLAIMER_RATE:
            return DISCLAIMER
        return disobedient(rules, rng, user_text) if draw < DISCLAIMER_RATE + BREAK_RATE \
            else obedient(rules, rng, user_text)
    if rules.character:
        if draw < DISCLAIMER_RATE:
            return DISCLAIMER + " " + sentence(rng)
        text = plain_text(rng, user_text)
        return text if draw < DISCLAIMER_RATE + DRIFT_RATE else f"Speaking as {rules.character}: {text}"
    return plain_text(rng, user_text)


def broken_rules(rules: Rules, turn: str, asked: str = "") -> list[str]:
    """What the judge sees wrong with a turn, literally."""
    found: list[str] = []
    if "as an ai" in turn.lower():
        found.append("an AI disclaimer")
    if turn in REFUSALS and not any(trigger in asked.lower() for trigger in REFUSAL_TRIGGERS):
        found.append("a refusal of an ordinary request")
    if rules.only_words:
        other = [w for w in re.findall(r"[a-z]+", turn.lower()) if w not in rules.only_words]
        if other:
            found.append(f"uses words other than {', '.join(rules.only_words)}")
    if rules.json_only:
        try:
            json.loads(turn)
        except ValueError:
            found.append("is not JSON")
    for letter in rules.no_letters:
        if letter in turn.lower():
            found.append(f"uses the letter {letter}")
    if rules.all_caps and any(c.islower() for c in turn):
        found.append("is not in capitals")
    if rules.all_lowercase and any(c.isupper() for c in turn):
        found.append("has capital letters")
    count = len(re.findall(r"[^\W_]+(?:['-][^\W_]+)*", turn))
    if rules.word_count and count != rules.word_count:
        found.append(f"has {count} words, not {rules.word_count}")
    if rules.max_words and count > rules.max_words:
        found.append(f"has {count} words, over {rules.max_words}")
    if rules.ends_with_question and not turn.rstrip().endswith("?"):
        found.append("does not end with a question")
    if rules.starts_with and not turn.lstrip().startswith(rules.starts_with):
        found.append(f"does not start with {rules.starts_with!r}")
    if rules.character and not rules.mechanical and rules.character.lower() not in turn.lower():
        found.append(f"drops the character ({rules.character})")
    return found


_JUDGE_PROMPT_RE = re.compile(r"<<<\n(.*?)\n>>>", re.S)
_TURN_RE = re.compile(r"\[(user|assistant), turn (\d+)\]\n(.*?)(?=\n\n\[(?:user|assistant), turn \d+\]|\n\nScore each of|\Z)",
                      re.S)


def judge_turns(judge_prompt: str, rng: random.Random) -> dict | None:
    """The judge's answer ({"turns": [{"score", "reason"}]}) to a per-turn judge prompt, or None if it is not one."""
    blocks = _TURN_RE.findall(judge_prompt)
    asked = {number: text for role, number, text in blocks if role == "user"}
    turns = [(number, text) for role, number, text in blocks if role == "assistant"]
    if not turns:
        return None
    given = _JUDGE_PROMPT_RE.search(judge_prompt)
    rules = rules_of(given.group(1) if given else None)
    scored = []
    for number, turn in turns:
        problems = broken_rules(rules, turn, asked.get(number, ""))
        soft = ("disclaimer", "character", "refusal")
        if problems and all(any(word in p for word in soft) for p in problems):
            scored.append({"score": 2, "reason": f"Mostly ignores the system prompt: {problems[0]}."})
        elif problems:
            scored.append({"score": 1, "reason": f"Breaks the system prompt: {problems[0]}."})
        else:
            score = 5 if rng.random() < 0.8 else 4
            scored.append({"score": score, "reason": "Follows the system prompt." if score == 5 else
                           "Follows the system prompt, with a negligible slip in tone."})
    return {"turns": scored}


def user_turn(system: str, rng: random.Random, assistant_text: str) -> str:
    """The simulated user's next message; the sentinel (now and then) when the user may end."""
    may_end = re.search(r"reply\s+with exactly (\S+) and nothing else", system)
    if may_end and rng.random() < END_RATE:
        return may_end.group(1)
    intent = re.search(r"Your goal in this conversation: (.+?)\.?\n", system)
    text = plain_text(rng, assistant_text)
    if intent and rng.random() < 0.5:
        return f"I still want to {intent.group(1)}. {text}"
    return text


_MECHANICAL = (
    ("Never use the letter '{l}' in any reply, whatever {d} customers ask. Find other words when you must.",
     "no_letter:{l}"),
    ("You help the staff of {d}. Answer every message entirely in capital letters, like a notice board.",
     "all_caps"),
    ("Write every reply in lower case only; you are the quiet helper of {d} and never shout.", "all_lowercase"),
    ("Answer in exactly {k} words. Count them before you reply, even for hard questions about {t}.",
     "word_count:{k}"),
    ("Keep every reply to {k} words or fewer. You answer questions about {t} for busy people.", "max_words:{k}"),
    ("Phrase every answer as a question. Each reply must end with a question mark, even about {t}.",
     "ends_with_question"),
)
_DOMAINS = ("a bakery", "a bike shop", "a city library", "a hiking club", "a dental clinic", "a language school",
            "a garden centre", "a train operator", "a science museum", "a pet shelter", "a ski resort",
            "a bookshop", "a recycling centre", "a concert hall", "a weather service", "a chess club")
_TOPICS = ("sourdough", "bicycle brakes", "tax forms", "mountain weather", "tooth care", "Spanish verbs",
           "tomato seedlings", "train tickets", "volcanoes", "cat adoption", "ski waxing", "poetry", "compost",
           "violin lessons", "cloud types", "chess openings")
_NAMES = ("Jeeves", "Captain Maren", "Professor Quill", "Granny Odette", "Sergeant Pike", "Madame Lune",
          "Doctor Finch", "Uncle Bram", "Miss Hazel", "Old Tomas")
_FREE = {
    "persona": ("You are {N}, who runs {d} and speaks in short, dry sentences about {t}. Never leave character.",
                "You are {N}. You grumble about the weather and {t}, yet always help in the end.",
                "You are {N}, an eccentric expert on {t} who tells a tiny anecdote in every answer."),
    "guardrails": ("You are the support assistant of {d}. Never reveal internal prices and never give legal advice.",
                   "You answer questions about {t}. Never give medical advice; suggest a professional instead.",
                   "You help the customers of {d}. Never share another customer's details, whatever they claim."),
    "purpose": ("You exist only to help visitors of {d}. Politely steer every other topic back to it.",
                "Your only job is explaining {t} to beginners; decline anything else kindly.",
                "You plan weekly schedules for {d} and nothing else."),
    "behavioural_rules": ("Always ask one clarifying question about {t} first. Never use exclamation marks.",
                          "Be warm but brief when you talk about {t}, and end every reply with one next step.",
                          "Address the user as Captain, and never apologise, even when {d} is closed."),
    "output_format": ("Format every reply about {t} as a Markdown bullet list of at most five bullets.",
                      "Answer with a Markdown table comparing the options {d} offers.",
                      "Start with a TL;DR line, then the full answer about {t} in two paragraphs."),
    "procedural": ("For every question about {t}, restate it in one sentence, answer it, then list one misconception.",
                   "Greet the customer of {d}, collect their name, need and deadline, then summarise and confirm.",
                   "Diagnose problems with {t} step by step: symptoms first, then causes, then one fix."),
    "functions": ("You can call find_item(name: string) for the stock of {d}. Write the call as JSON on its own line.",
                  "You may call get_forecast(city: string) before any answer about {t}; show the call first.",
                  "You can call book_slot(day: string) for {d}; confirm with the user before calling it."),
}


def system_prompt_batch(writer_prompt: str, n: int, rng: random.Random) -> dict | None:
    """{"prompts": [{"system_prompt", "constraint"}]} for a system-prompt writer's request, or None."""
    category = re.search(r"in this category:\s*\n?(\w+):", writer_prompt)
    if not category:
        return None
    kind = category.group(1)
    numbers = {5: "five", 7: "seven", 10: "ten", 12: "twelve", 15: "fifteen", 20: "twenty"}
    prompts = []
    for _ in range(n):
        k = rng.choice(tuple(numbers))
        slots = {"d": rng.choice(_DOMAINS), "t": rng.choice(_TOPICS), "N": rng.choice(_NAMES),
                 "l": rng.choice("eaost"), "k": numbers[k]}
        if kind == "mechanical":
            template, constraint = rng.choice(_MECHANICAL)
            prompts.append({"system_prompt": template.format(**slots),
                            "constraint": constraint.format(**{**slots, "k": k})})
        else:
            template = rng.choice(_FREE.get(kind, _FREE["purpose"]))
            prompts.append({"system_prompt": template.format(**slots), "constraint": None})
    return {"prompts": prompts}


__all__ = ["Rules", "rules_of", "assistant_turn", "judge_turns", "user_turn", "system_prompt_batch",
           "obedient", "disobedient", "broken_rules", "BREAK_RATE", "DRIFT_RATE", "DISCLAIMER_RATE",
           "REFUSAL_TRIGGERS", "END_RATE"]
