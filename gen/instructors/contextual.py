"""`contextual`: closed-context question answering in the airoboros delimiter format.

The instruction a record holds is exactly::

    BEGININPUT
    BEGINCONTEXT
    key: value
    ENDCONTEXT
    text
    ENDINPUT
    (more input blocks)
    BEGININSTRUCTION
    instruction
    ENDINSTRUCTION

A unit makes: one call writing 1-N input blocks with metadata (`schemas/contextual_blocks.schema.json`), one
writing an instruction about them, and one answering it from the blocks alone (`schemas/contextual_answer.schema.json`,
the citable sources limited to the blocks' urls). A share (`unanswerable_share`) of the instructions ask what
the blocks do not say; their correct answer says so. Checks in code: every cited source is one of the blocks;
an answer to an answerable instruction does not claim the context lacks it, and cites a source when asked; an
answer to an unanswerable one cites nothing and says the context does not contain it (a pattern), and when the
job has a `judge` teacher, the judge confirms it invents no answer.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import Field

from gen.errors import OutputRejected
from gen.instructors.base import Instructor, InstructorOptions, PlannedUnit, UnitInput
from gen.schemas import load_schema
from gen.types import NewRecord, Reply, Teacher

DEFAULT_TOPICS = ["a company's quarterly report", "a local news story", "a scientific study", "a product review",
                  "a historical event", "a recipe blog post", "a sports match report", "an internal e-mail",
                  "a travel guide", "a software release note", "a museum exhibition", "a medical leaflet"]
METADATA_KEYS = ("title", "author", "date", "url")

BLOCKS_PROMPT = """Write {n} short, plausible, self-contained texts ({topic}, or texts related to it), each 2-4 \
paragraphs with specific, invented details (names, numbers, dates, places). Give each its metadata: title, \
author, date and a url unique to it. They will be used as the only context for reading-comprehension questions."""

ANSWERABLE_PROMPT = """{blocks}

Write one instruction a user could give about the texts above that the texts fully answer (a question, a \
summary, an extraction of details, a comparison between texts).{cite} Write only the instruction."""

UNANSWERABLE_PROMPT = """{blocks}

Write one question a user could plausibly ask about the subject of the texts above that the texts do NOT answer: \
the texts must not contain the information needed. Write only the question."""

CITE = " Cite the source (title and url) of your answer."

ANSWER_PROMPT = """Answer the instruction using only the information in the input blocks. If they do not \
contain what it asks for, say that the provided context does not contain that information, and do not guess. \
List as sources the urls of the blocks your answer uses (none when the context does not answer it).

{instruction}"""

JUDGE_PROMPT = """The context below does not contain the answer to the instruction. Decide whether the answer \
nevertheless invents one (states facts, names or numbers the context does not give, as if they answered it). \
Saying the context lacks the information, perhaps with what the context does say, is not inventing.

{instruction}

Answer: {answer}"""

NOT_IN_CONTEXT = re.compile(
    r"\b(does not|doesn't|do not|don't|did not|cannot|can't|is not|isn't|are not|aren't)\s+"
    r"(contain|include|mention|say|state|specify|provide|give|cover|be (found|determined|answered)|"
    r"(mentioned|provided|specified|stated|given|included))"
    r"|\bno (information|mention|details?|data)\b|\bnot (mentioned|provided|specified|stated|given)\b"
    r"|\bunable to (find|answer|determine)\b", re.IGNORECASE)


class ContextualOptions(InstructorOptions):
    count: int = Field(gt=0, description="How many records (units) to make.")
    min_blocks: int = Field(default=1, ge=1, le=8, description="Fewest input blocks per record.")
    max_blocks: int = Field(default=3, ge=1, le=8, description="Most input blocks per record.")
    unanswerable_share: float = Field(default=0.1, ge=0, le=1,
                                      description="Share of instructions the context does not answer.")
    cite_share: float = Field(default=0.5, ge=0, le=1,
                              description="Share of answerable instructions that ask for the source.")
    topics: list[str] = Field(default_factory=lambda: list(DEFAULT_TOPICS), min_length=1)


def render_blocks(blocks: list[dict[str, Any]]) -> str:
    parts = []
    for block in blocks:
        meta = "\n".join(f"{k}: {' '.join(str(block['metadata'][k]).split())}" for k in METADATA_KEYS
                         if k in block["metadata"])
        parts.append(f"BEGININPUT\nBEGINCONTEXT\n{meta}\nENDCONTEXT\n{block['text'].strip()}\nENDINPUT")
    return "\n".join(parts)


def render_instruction(blocks: list[dict[str, Any]], instruction: str) -> str:
    return f"{render_blocks(blocks)}\nBEGININSTRUCTION\n{instruction.strip()}\nENDINSTRUCTION"


BLOCK = re.compile(r"BEGININPUT\nBEGINCONTEXT\n(.*?)ENDCONTEXT\n(.*?)\nENDINPUT\n", re.DOTALL)


def parse_contextual(text: str) -> tuple[list[dict[str, Any]], str]:
    """(blocks with their metadata and text, instruction) of a record in the delimiter format; ValueError if not."""
    if not text.endswith("\nENDINSTRUCTION") or "\nBEGININSTRUCTION\n" not in text:
        raise ValueError("the instruction must close with BEGININSTRUCTION ... ENDINSTRUCTION")
    head, instruction = text[: -len("\nENDINSTRUCTION")].rsplit("\nBEGININSTRUCTION\n", 1)
    head += "\n"
    blocks, pos = [], 0
    while pos < len(head):
        match = BLOCK.match(head, pos)
        if not match:
            raise ValueError(f"expected BEGININPUT/BEGINCONTEXT/ENDCONTEXT/ENDINPUT at character {pos}")
        meta: dict[str, str] = {}
        for line in match.group(1).splitlines():
            key, sep, value = line.partition(": ")
            if not sep or not key.strip():
                raise ValueError(f"context line {line!r} is not 'key: value'")
            meta[key.strip()] = value.strip()
        blocks.append({"metadata": meta, "text": match.group(2)})
        pos = match.end()
    if not blocks or not instruction.strip():
        raise ValueError("a record needs at least one input block and an instruction")
    return blocks, instruction


def answer_schema(urls: list[str], *, answerable: bool, cite: bool) -> dict[str, Any]:
    schema = load_schema("contextual_answer")
    sources = {**schema["properties"]["sources"], "items": {"enum": urls}, "maxItems": len(urls)}
    if not answerable:
        sources["maxItems"] = 0
    elif cite:
        sources["minItems"] = 1
    return {**schema, "properties": {**schema["properties"], "sources": sources}}


def answer_problem(data: dict[str, Any], urls: list[str], *, answerable: bool, cite: bool) -> str | None:
    """What is wrong with an answer (JSON per contextual_answer) given the blocks' urls, or None."""
    cited = data.get("sources") or []
    unknown = [s for s in cited if s not in urls]
    if unknown:
        return f"the answer cites {unknown[0]!r}, which is not one of the input blocks ({', '.join(urls)})"
    says_missing = bool(NOT_IN_CONTEXT.search(data["answer"]))
    if answerable:
        if says_missing:
            return "the context answers this instruction, but the answer says it does not"
        if cite and not cited:
            return "the instruction asks for the source, and the answer cites none"
        return None
    if cited:
        return "the context does not answer this instruction, yet the answer cites a source for it"
    if not says_missing:
        return "the context does not answer this instruction, and the answer does not say so"
    return None


def render_answer(data: dict[str, Any], blocks: list[dict[str, Any]], cite: bool) -> str:
    text = data["answer"].strip()
    if not cite or not data.get("sources"):
        return text
    by_url = {b["metadata"]["url"]: b["metadata"] for b in blocks}
    refs = "\n\n".join("\n".join(f"{k}: {by_url[u][k]}" for k in ("title", "url", "date") if k in by_url[u])
                       for u in dict.fromkeys(data["sources"]))
    return f"{text}\n\nReference(s):\n{refs}"


class ContextualInstructor(Instructor[ContextualOptions]):
    name = "contextual"
    summary = "Closed-context QA in BEGININPUT/BEGINCONTEXT format, with unanswerable instructions; sources checked."
    Options = ContextualOptions

    @property
    def calls_per_unit(self) -> dict[str, float | tuple[float, float]]:  # type: ignore[override]
        """The blocks, the instruction and the answer; the judge (when there is one) only for unanswerable
        instructions whose answer passed its checks: none to one per such unit."""
        return {"main": 3.0, "judge": (0.0, 1.5 * self.options.unanswerable_share)}

    def plan(self) -> Iterator[PlannedUnit]:
        opts = self.options
        low, high = opts.min_blocks, max(opts.min_blocks, opts.max_blocks)
        for i in range(opts.count):
            # exactly the shares asked for, spread evenly over the units
            unanswerable = int((i + 1) * opts.unanswerable_share) > int(i * opts.unanswerable_share)
            cite = not unanswerable and int((i + 1) * opts.cite_share) > int(i * opts.cite_share)
            yield PlannedUnit(key=f"contextual-{i:05d}", payload={
                "topic": opts.topics[i % len(opts.topics)], "blocks": low + i % (high - low + 1),
                "answerable": not unanswerable, "cite": cite})

    async def run(self, unit: UnitInput, teachers: Mapping[str, Teacher]) -> list[NewRecord]:
        p, teacher = unit.payload, teachers["main"]
        schema = load_schema("contextual_blocks")
        schema = {**schema, "properties": {"blocks": {**schema["properties"]["blocks"], "minItems": p["blocks"],
                                                      "maxItems": p["blocks"]}}}
        made = await teacher.chat([{"role": "user", "content": BLOCKS_PROMPT.format(n=p["blocks"], topic=p["topic"])}],
                                  schema=schema, schema_name="contextual_blocks")
        blocks = unique_urls(made.data["blocks"])
        urls = [b["metadata"]["url"] for b in blocks]
        answerable, cite = p["answerable"], p["cite"]
        ask = (ANSWERABLE_PROMPT.format(blocks=render_blocks(blocks), cite=CITE if cite else "") if answerable
               else UNANSWERABLE_PROMPT.format(blocks=render_blocks(blocks)))
        written = (await teacher.chat([{"role": "user", "content": ask}], check=lambda r: None if r.text.strip()
                                      and "ENDINSTRUCTION" not in r.text else "no usable instruction")).text.strip()
        instruction = written + (CITE if cite and "source" not in written.lower() else "")
        user_text = render_instruction(blocks, instruction)

        def check(reply: Reply) -> str | None:
            return answer_problem(reply.data, urls, answerable=answerable, cite=cite)

        meta: dict[str, Any] = {"topic": p["topic"], "blocks": len(blocks), "answerable": answerable,
                                "cite": cite, "teacher": teacher.name, "model": teacher.model}
        key = "contextual:" + hashlib.sha256(user_text.encode()).hexdigest()[:32]
        try:
            reply = await teacher.chat([{"role": "user", "content": ANSWER_PROMPT.format(instruction=user_text)}],
                                       schema=answer_schema(urls, answerable=answerable, cite=cite),
                                       schema_name="contextual_answer", check=check)
        except OutputRejected as exc:  # kept for review: the instruction and the last answer refused
            raise OutputRejected(exc.reason, raw=exc.raw, records=[NewRecord(
                key="rejected:" + key, kind="rejected", meta={**meta, "rejected_because": exc.reason},
                conversation=[{"role": "user", "content": user_text},
                              {"role": "assistant", "content": (exc.raw or "(no answer)").strip()}])]) from None
        answer = render_answer(reply.data, blocks, cite)
        conversation = [{"role": "user", "content": user_text}, {"role": "assistant", "content": answer}]
        problem = check(reply)  # a replayed answer needs its verdict again
        if problem is None and not answerable and "judge" in teachers:
            problem = await judge_invents(teachers["judge"], user_text, reply.data["answer"])
            meta["judged"] = True
        if problem:
            raise OutputRejected(problem, raw=reply.text, records=[NewRecord(
                key="rejected:" + key, kind="rejected", conversation=conversation,
                meta={**meta, "rejected_because": problem})])
        parse_contextual(user_text)  # the record is in the delimiter format, or this is a bug worth failing on
        return [NewRecord(key=key, conversation=conversation,
                          meta={**meta, "sources": list(reply.data.get("sources") or [])})]


def unique_urls(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Blocks whose urls are all different (a repeated url gets a #2 fragment), so a citation names one block."""
    seen: set[str] = set()
    out = []
    for block in blocks:
        url = str(block["metadata"]["url"]).strip()
        while url in seen:
            url += "#2"
        seen.add(url)
        out.append({"metadata": {**block["metadata"], "url": url}, "text": block["text"]})
    return out


async def judge_invents(judge: Teacher, instruction: str, answer: str) -> str | None:
    try:
        verdict = (await judge.chat([{"role": "user", "content": JUDGE_PROMPT.format(
            instruction=instruction, answer=answer)}], schema=load_schema("contextual_verdict"),
            schema_name="contextual_verdict")).data
    except OutputRejected as exc:
        return f"the judge gave no usable verdict: {exc.reason}"
    if verdict["invents"]:
        return f"the judge finds the answer invents what the context does not say: {verdict['reason']}"
    return None
