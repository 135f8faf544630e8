"""`plan`: reWOO-style execution plans. Given a list of tools and a question, the answer is a plan::

    Plan: <what to do first>
    :evidence1: = Tool[input]
    Plan: <next step>
    :evidence2: = OtherTool[... :evidence1: ...]
    Answer: :evidence2:

The teacher writes the question and the steps as JSON (`schemas/plan_steps.schema.json`, tools limited to the
listed names); gen renders the exact text and checks it with a strict grammar (`parse_plan`): `Plan:` and
evidence lines alternate, evidence is numbered 1..N in order, every tool is a listed one, an input refers only to
evidence already produced, and the plan ends with `Answer: :evidenceN:` naming existing evidence.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gen.errors import OutputRejected
from gen.instructors.base import Instructor, InstructorOptions, PlannedUnit, UnitInput
from gen.schemas import load_schema
from gen.types import NewRecord, Reply, Teacher


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", description="The name plans call it by.")
    description: str = Field(min_length=1, description="What it does with its input and what it returns.")


DEFAULT_TOOLS = [
    Tool(name="Search", description="Searches the web for the input text; returns a list of result snippets "
                                    "with their links."),
    Tool(name="LinkExtractor", description="Extracts the links from the input text, one per line."),
    Tool(name="Scraper", description="Loads the pages at the links in the input (one per line) and returns "
                                     "their plain text."),
    Tool(name="QA", description="Answers the question in the input from the text it is given; the input may "
                                "name earlier evidence, e.g. 'What is the capital of Peru, given :evidence1:?'"),
]

DEFAULT_TOPICS = ["history", "science", "geography", "technology", "sport", "literature", "business", "health",
                  "music", "space exploration"]

PROMPT = """Write a question about {topic} that needs several steps with tools to answer, and a plan that \
answers it using only these tools:
{tools}

The plan has {low} to {high} steps. Each step says what it does (plan) and calls one tool with an input text; \
the input may use the user's question and the evidence of earlier steps, named :evidence1:, :evidence2:, ... \
(the evidence of step k is :evidencek:), never the evidence of the step itself or of a later one. The last \
step's evidence is the answer."""

INSTRUCTION = """Please create a step-by-step plan to generate an ideal response to the user instruction, making \
use of a set of available tools. Each plan will have a corresponding evidence value, which will be the output \
of one of the available functions given an input string that can be the user question, one or more previous \
evidence values, or a mixture of both.

Here are the tools available to be called:
{tools}

The output should be in format:
Plan: [first action to take based on input question]
:evidence1: = [function to call with input parameter]
Plan: [next action to take, based on result of :evidence1:]
:evidence2: = [next function to call and input parameter, which may include reference to previous evidence, \
e.g. "Given context :evidence1:"]
...
Answer: [:evidence[n]: containing the final answer.]

Question: {question}"""


class PlanOptions(InstructorOptions):
    count: int = Field(gt=0, description="How many plans (units) to make.")
    tools: list[Tool] = Field(default_factory=lambda: list(DEFAULT_TOOLS), min_length=1,
                              description="The tools plans may call.")
    min_steps: int = Field(default=2, ge=1, le=10)
    max_steps: int = Field(default=5, ge=1, le=12)
    topics: list[str] = Field(default_factory=lambda: list(DEFAULT_TOPICS), min_length=1)


@dataclass(frozen=True)
class Step:
    plan: str
    number: int
    tool: str
    input: str


PLAN_LINE = re.compile(r"^Plan: (\S.*)$")
EVIDENCE_LINE = re.compile(r"^:evidence(\d+): = ([A-Za-z][A-Za-z0-9_]*)\[(.*)\]$")
ANSWER_LINE = re.compile(r"^Answer: :evidence(\d+):$")
REFERENCE = re.compile(r":evidence(\d+):")


class PlanError(ValueError):
    pass


def parse_plan(text: str, tools: list[str]) -> list[Step]:
    """The steps of a plan written in the strict grammar above; PlanError naming the first line that breaks it."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if len(lines) < 3 or len(lines) % 2 == 0:
        raise PlanError("a plan is pairs of 'Plan:' and ':evidenceN: = Tool[input]' lines, then 'Answer: :evidenceN:'")
    steps: list[Step] = []
    for i in range(0, len(lines) - 1, 2):
        plan, call = PLAN_LINE.match(lines[i]), EVIDENCE_LINE.match(lines[i + 1])
        if not plan:
            raise PlanError(f"line {i + 1} should be 'Plan: ...': {lines[i]!r}")
        if not call:
            raise PlanError(f"line {i + 2} should be ':evidenceN: = Tool[input]': {lines[i + 1]!r}")
        number, tool, given = int(call.group(1)), call.group(2), call.group(3).strip()
        if number != len(steps) + 1:
            raise PlanError(f"line {i + 2}: evidence is numbered :evidence{len(steps) + 1}: here, "
                            f"not :evidence{number}:")
        if tool not in tools:
            raise PlanError(f"line {i + 2}: tool '{tool}' is not one of the listed tools ({', '.join(tools)})")
        if not given:
            raise PlanError(f"line {i + 2}: {tool} is called without an input")
        later = [int(r) for r in REFERENCE.findall(given) if int(r) >= number or int(r) < 1]
        if later:
            raise PlanError(f"line {i + 2}: :evidence{number}: uses :evidence{later[0]}:, "
                            "which is not an earlier step's")
        steps.append(Step(plan.group(1).strip(), number, tool, given))
    answer = ANSWER_LINE.match(lines[-1])
    if not answer:
        raise PlanError(f"the last line should be 'Answer: :evidenceN:': {lines[-1]!r}")
    if not 1 <= int(answer.group(1)) <= len(steps):
        raise PlanError(f"the answer names :evidence{answer.group(1)}:, which no step produced")
    return steps


def one_line(text: str) -> str:
    return " ".join(text.split())


def render_plan(steps: list[dict[str, Any]]) -> str:
    lines = []
    for n, step in enumerate(steps, 1):
        lines += [f"Plan: {one_line(step['plan'])}", f":evidence{n}: = {step['tool']}[{one_line(step['input'])}]"]
    return "\n".join(lines + [f"Answer: :evidence{len(steps)}:"])


def tools_text(tools: list[Tool]) -> str:
    return "\n".join(f"{t.name}[input]: {t.description}" for t in tools)


class PlanInstructor(Instructor[PlanOptions]):
    name = "plan"
    summary = "reWOO-style plans (Plan: / :evidenceN: = Tool[input] / Answer:), parsed with a strict grammar."
    Options = PlanOptions

    def plan(self) -> Iterator[PlannedUnit]:
        topics = self.options.topics
        for i in range(self.options.count):
            yield PlannedUnit(key=f"plan-{i:05d}", payload={"topic": topics[i % len(topics)]})

    def steps_schema(self) -> dict[str, Any]:
        opts = self.options
        schema = load_schema("plan_steps")
        step = schema["properties"]["steps"]["items"]
        step = {**step, "properties": {**step["properties"], "tool": {"enum": [t.name for t in opts.tools]}}}
        steps = {**schema["properties"]["steps"], "items": step, "minItems": opts.min_steps,
                 "maxItems": max(opts.min_steps, opts.max_steps)}
        return {**schema, "properties": {**schema["properties"], "steps": steps}}

    async def run(self, unit: UnitInput, teachers: Mapping[str, Teacher]) -> list[NewRecord]:
        opts, teacher = self.options, teachers["main"]
        names = [t.name for t in opts.tools]

        def check(reply: Reply) -> str | None:
            try:
                parse_plan(render_plan(reply.data["steps"]), names)
            except PlanError as exc:
                return f"the plan breaks the grammar: {exc}"
            return None

        prompt = PROMPT.format(topic=unit.payload["topic"], tools=tools_text(opts.tools), low=opts.min_steps,
                               high=max(opts.min_steps, opts.max_steps))
        reply = await teacher.chat([{"role": "user", "content": prompt}], schema=self.steps_schema(),
                                   schema_name="plan_steps", check=check)
        problem = check(reply)  # a replayed answer needs its verdict again
        if problem:
            raise OutputRejected(problem, raw=reply.text)
        question = one_line(reply.data["question"])
        answer = render_plan(reply.data["steps"])
        instruction = INSTRUCTION.format(tools=tools_text(opts.tools), question=question)
        key = "plan:" + hashlib.sha256(question.lower().encode()).hexdigest()[:32]
        return [NewRecord(key=key, conversation=[{"role": "user", "content": instruction},
                                                 {"role": "assistant", "content": answer}],
                          meta={"topic": unit.payload["topic"], "tools": names, "steps": len(reply.data["steps"]),
                                "teacher": teacher.name, "model": teacher.model})]
