"""`roleplay`: characters with card-style descriptions talk in a scene, one journaled call per turn.

A unit first gets its cast and scene (from the job file's `characters`/`scenes`, or written by the teacher as
JSON per `schemas/roleplay_scene.schema.json`), then makes `turns` calls, one per character message. Each call
is journaled before the next is made, so a unit interrupted at turn 5 (a killed `gen run` or worker) replays
turns 1-4 from the journal and pays again only from turn 5 on.

The first character is the user's: its turns are `user` messages in the record, every other character's are
`assistant` (with more than two characters, speakers alternate between the user's character and the others in
turn, and assistant turns begin with the speaker's name). The record's system message is the card of the
assistant's character(s) and the scene; meta keeps every character's name and card, the user's character, and
who spoke each turn. A turn is refused (asked again, then the unit rejected) when it is empty, speaks for
another character (a `Name:` label), or carries an AI disclaimer.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gen.errors import OutputRejected
from gen.instructors.base import Instructor, InstructorOptions, PlannedUnit, UnitInput
from gen.instructors.systemchat.filters import TurnFilter
from gen.schemas import load_schema
from gen.types import Message, NewRecord, Reply, Teacher

DEFAULT_SETTINGS = ["a fantasy tavern", "a space station in trouble", "a detective's office in the 1920s",
                    "a cooking contest", "a haunted lighthouse", "a job interview", "a pirate ship",
                    "a small-town bakery", "a post-apocalyptic market", "a royal court"]

CAST_PROMPT = """Invent {n} characters for a roleplay set in {setting}, and the scene they meet in.
Give each character a name and a character card: appearance, personality, how they speak (vocabulary, verbal \
tics), what they want in this scene. The scene says where and when, what is at stake, and how it starts. \
The characters should want different things, so the conversation has tension."""

TURN_SYSTEM = """You are {name}, in a roleplay.
{card}

The other character(s):
{others}

Scene: {scene}

Write only {name}'s next message: what {name} says and does (actions in *asterisks*), one to three short \
paragraphs, in character, moving the scene forward. Never write for another character, never prefix your \
name, never step out of the story."""

OPENING = "(The scene begins. You speak first.)"


class Character(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    card: str = Field(min_length=1, description="Appearance, personality, speech, wants.")


class Scene(BaseModel):
    model_config = ConfigDict(extra="forbid")
    characters: list[Character] = Field(min_length=2, description="The first one is the user's character.")
    scene: str = Field(min_length=1)


class RoleplayOptions(InstructorOptions):
    count: int = Field(gt=0, description="How many conversations (units) to make.")
    turns: int = Field(default=8, ge=2, le=60, description="Character messages per conversation.")
    characters: int = Field(default=2, ge=2, le=6, description="Characters per scene the teacher invents.")
    settings: list[str] = Field(default_factory=lambda: list(DEFAULT_SETTINGS), min_length=1,
                                description="Settings for invented scenes, one per unit in turn.")
    scenes: list[Scene] = Field(default_factory=list, description="Fixed casts and scenes; units use these and "
                                                                  "then the settings (invented casts) in turn.")


def speakers(n_characters: int, turns: int) -> list[int]:
    """Who speaks each turn: the user's character (0) on even turns, the others in turn on odd ones."""
    others = list(range(1, n_characters))
    return [0 if t % 2 == 0 else others[(t // 2) % len(others)] for t in range(turns)]


def unique_names(characters: list[dict[str, str]]) -> list[dict[str, str]]:
    seen: set[str] = set()
    out = []
    for c in characters:
        name = " ".join(c["name"].split()) or "Stranger"
        while name.lower() in seen:
            name += " II"
        seen.add(name.lower())
        out.append({"name": name, "card": c["card"].strip()})
    return out


def strip_own_label(text: str, name: str) -> str:
    return re.sub(rf"^\s*\**{re.escape(name)}\**\s*:\s*", "", text.strip(), flags=re.IGNORECASE).strip()


def other_label(text: str, names: list[str]) -> str | None:
    for name in names:
        if re.search(rf"(?im)^\s*\**{re.escape(name)}\**\s*:", text):
            return name
    return None


class RoleplayInstructor(Instructor[RoleplayOptions]):
    name = "roleplay"
    summary = "Multi-character roleplay: card-style characters in a scene, one journaled call per turn; resumable."
    Options = RoleplayOptions

    @property
    def calls_per_unit(self) -> dict[str, float]:  # type: ignore[override]
        """One call per character message, and one to invent the cast for units without a fixed scene."""
        opts = self.options
        invented = len(opts.settings) / (len(opts.scenes) + len(opts.settings))
        return {"main": opts.turns + invented}

    def plan(self) -> Iterator[PlannedUnit]:
        opts = self.options
        pool: list[Scene | str] = [*opts.scenes, *opts.settings]  # fixed scenes first, then invented ones, in turn
        for i in range(opts.count):
            payload: dict[str, Any] = {"turns": opts.turns}
            chosen = pool[i % len(pool)]
            if isinstance(chosen, Scene):
                payload["scene"] = chosen.model_dump()
            else:
                payload["setting"] = chosen
            yield PlannedUnit(key=f"roleplay-{i:05d}", payload=payload)

    async def cast(self, unit: UnitInput, teacher: Teacher) -> tuple[list[dict[str, str]], str]:
        p = unit.payload
        if "scene" in p:
            return unique_names(p["scene"]["characters"]), p["scene"]["scene"].strip()
        n = self.options.characters
        schema = load_schema("roleplay_scene")
        schema = {**schema, "properties": {**schema["properties"], "characters": {
            **schema["properties"]["characters"], "minItems": n, "maxItems": n}}}
        reply = await teacher.chat([{"role": "user", "content": CAST_PROMPT.format(n=n, setting=p["setting"])}],
                                   schema=schema, schema_name="roleplay_scene")
        return unique_names(reply.data["characters"]), reply.data["scene"].strip()

    async def run(self, unit: UnitInput, teachers: Mapping[str, Teacher]) -> list[NewRecord]:
        teacher = teachers["main"]
        characters, scene = await self.cast(unit, teacher)
        names = [c["name"] for c in characters]
        order = speakers(len(characters), unit.payload["turns"])
        turns: list[tuple[int, str]] = []  # (speaker, text)
        turn_filter = TurnFilter()
        for number, speaker in enumerate(order, 1):
            others = [n for i, n in enumerate(names) if i != speaker]

            def check(reply: Reply, speaker: int = speaker, others: list[str] = others) -> str | None:
                text = strip_own_label(reply.text, names[speaker])
                leaked = other_label(text, others)
                if leaked:
                    return f"{names[speaker]}'s turn speaks for {leaked}"
                return turn_filter.problem(text)

            try:
                reply = await teacher.chat(self.turn_messages(characters, scene, speaker, turns), check=check)
            except OutputRejected as exc:
                raise OutputRejected(f"turn {number} ({names[speaker]}): {exc.reason}", raw=exc.raw) from None
            turns.append((speaker, strip_own_label(reply.text, names[speaker])))
        conversation = self.record_messages(characters, scene, turns)
        key = "roleplay:" + hashlib.sha256(repr(conversation).encode()).hexdigest()[:32]
        return [NewRecord(key=key, conversation=conversation, meta={
            "characters": characters, "user_character": names[0], "assistant_characters": names[1:],
            "speakers": [names[s] for s, _ in turns], "scene": scene, "turns": len(turns),
            "setting": unit.payload.get("setting"), "teacher": teacher.name, "model": teacher.model})]

    @staticmethod
    def turn_messages(characters: list[dict[str, str]], scene: str, speaker: int,
                      turns: list[tuple[int, str]]) -> list[Message]:
        """What the speaking character sees: its card, the others', the scene, the story so far with its own
        turns as `assistant` and the others' as `user` (named)."""
        me = characters[speaker]
        others = "\n".join(f"- {c['name']}: {c['card']}" for i, c in enumerate(characters) if i != speaker)
        sent: list[Message] = [{"role": "system", "content": TURN_SYSTEM.format(
            name=me["name"], card=me["card"], others=others, scene=scene)}]
        if not turns:
            sent.append({"role": "user", "content": OPENING})
        for who, text in turns:
            if who == speaker:
                sent.append({"role": "assistant", "content": text})
            else:
                sent.append({"role": "user", "content": f"{characters[who]['name']}: {text}"})
        if turns and turns[-1][0] == speaker:  # never two assistant messages in a row
            sent.append({"role": "user", "content": "(Continue.)"})
        return sent

    @staticmethod
    def record_messages(characters: list[dict[str, str]], scene: str, turns: list[tuple[int, str]]) -> list[Message]:
        """The user's character as `user`, the others as `assistant`; the system message sets the scene."""
        user, others = characters[0], characters[1:]
        cards = "\n\n".join(f"{c['name']}: {c['card']}" for c in others)
        who = " and ".join(c["name"] for c in others)
        system = (f"You are {who} in a roleplay with {user['name']}.\n\n{cards}\n\n"
                  f"{user['name']} (played by the user): {user['card']}\n\nScene: {scene}")
        messages: list[Message] = [{"role": "system", "content": system}]
        for speaker, text in turns:
            if speaker == 0:
                messages.append({"role": "user", "content": text})
            else:
                content = f"{characters[speaker]['name']}: {text}" if len(characters) > 2 else text
                messages.append({"role": "assistant", "content": content})
        return messages
