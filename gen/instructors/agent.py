"""`agent`: function selection. The teacher invents a set of functions and a user input, then picks the function
(and its arguments) that serves the input; the record's answer is that call as JSON or YAML (`answer_format`).

Two calls per unit. The first writes the functions and the input (JSON per `schemas/agent_task.schema.json`);
the second picks the call, with a schema built from those functions (one branch per function, its parameters
only), so a teacher with structured output can only name a listed function. Whatever the teacher's mode, the
reply is checked in code (`call_problem`): it names a listed function, uses only that function's parameters,
gives every required one with a value of its type. The rendered answer is parsed back before it is stored.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import yaml
from pydantic import Field

from gen.errors import OutputRejected
from gen.instructors.base import Instructor, InstructorOptions, PlannedUnit, UnitInput
from gen.schemas import load_schema
from gen.types import NewRecord, Reply, Teacher

DEFAULT_DOMAINS = [
    "searching and filtering documents", "calendar and reminders", "e-commerce orders", "weather and maps",
    "data analysis of CSV files", "email", "image processing", "smart home devices", "database queries",
    "text summarisation and translation", "file management", "finance and currency conversion",
]

TASK_PROMPT = """Invent {n} functions that an AI assistant working on {domain} could call, and one input a user \
might send that exactly one of these functions serves.
Each function has a snake_case name, a one-sentence description and 1-4 parameters; each parameter has a \
snake_case name, a type (string, integer, number or boolean), a short description, and whether it is required.
The user input must give the information the function's required parameters need, in natural words."""

CHOOSE_PROMPT = """As an AI assistant, select the most suitable function and parameters from the list of \
available functions below, based on the user input. Provide your response in {fmt} format.

Input: {user_input}

Available functions:
{functions}"""

PY_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,), "number": (int, float),
                                          "boolean": (bool,)}


class AgentOptions(InstructorOptions):
    count: int = Field(gt=0, description="How many records (units) to make.")
    functions_per_unit: int = Field(default=4, ge=2, le=12, description="Functions invented per unit.")
    domains: list[str] = Field(default_factory=lambda: list(DEFAULT_DOMAINS), min_length=1,
                               description="Domains, one per unit in turn.")
    answer_format: Literal["json", "yaml"] = Field(default="json", description="How the answer writes the call.")


def identifier(text: str) -> str:
    """A snake_case name: the teacher's name with anything else turned into underscores."""
    name = re.sub(r"[^0-9a-zA-Z]+", "_", text.strip()).strip("_").lower()
    return name if name and not name[0].isdigit() else f"f_{name}"


def clean_functions(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The teacher's functions with identifier names, unique function and parameter names."""
    functions, names = [], set()
    for fn in raw:
        name = identifier(fn["name"])
        while name in names:
            name += "_2"
        names.add(name)
        params, seen = [], set()
        for p in fn["parameters"]:
            pname = identifier(p["name"])
            if pname in seen:
                continue
            seen.add(pname)
            params.append({"name": pname, "type": p["type"], "description": p["description"].strip(),
                           "required": bool(p["required"])})
        functions.append({"name": name, "description": fn["description"].strip(), "parameters": params})
    return functions


def functions_text(functions: list[dict[str, Any]]) -> str:
    listing = {fn["name"]: {"description": fn["description"], "parameters": {
        p["name"]: f"{p['description']} ({p['type']}{', required' if p['required'] else ''})"
        for p in fn["parameters"]}} for fn in functions}
    return yaml.safe_dump(listing, sort_keys=False, allow_unicode=True, width=1000).rstrip()


def call_schema(functions: list[dict[str, Any]]) -> dict[str, Any]:
    """{"call": {"function": one of the names, "arguments": that function's parameters only}}."""
    branches = [{
        "type": "object", "additionalProperties": False, "required": ["function", "arguments"],
        "properties": {
            "function": {"const": fn["name"]},
            "arguments": {"type": "object", "additionalProperties": False,
                          "required": [p["name"] for p in fn["parameters"] if p["required"]],
                          "properties": {p["name"]: {"type": p["type"], "description": p["description"]}
                                         for p in fn["parameters"]}}}} for fn in functions]
    return {"type": "object", "additionalProperties": False, "required": ["call"],
            "properties": {"call": {"anyOf": branches}}}


def call_problem(call: Any, functions: list[dict[str, Any]]) -> str | None:
    """Why `call` ({"function", "arguments"}) is not a valid call of one of `functions`, or None."""
    if not isinstance(call, dict) or not isinstance(call.get("function"), str):
        return "the answer does not name a function"
    by_name = {fn["name"]: fn for fn in functions}
    fn = by_name.get(call["function"])
    if fn is None:
        return f"function '{call['function']}' is not in the list ({', '.join(by_name)})"
    args = call.get("arguments")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return "arguments must be a mapping of parameter names to values"
    params = {p["name"]: p for p in fn["parameters"]}
    unknown = [a for a in args if a not in params]
    if unknown:
        return f"function '{fn['name']}' has no parameter '{unknown[0]}' (it has: {', '.join(params) or 'none'})"
    missing = [p for p, spec in params.items() if spec["required"] and p not in args]
    if missing:
        return f"required parameter '{missing[0]}' of '{fn['name']}' is missing"
    for name, value in args.items():
        kind = params[name]["type"]
        if not isinstance(value, PY_TYPES[kind]) or (kind != "boolean" and isinstance(value, bool)):
            return f"parameter '{name}' must be a {kind}, not {json.dumps(value)}"
    return None


def render_call(call: dict[str, Any], fmt: str) -> str:
    body = {"function": call["function"], "arguments": call.get("arguments") or {}}
    if fmt == "yaml":
        return yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=1000).rstrip()
    return json.dumps(body, indent=2, ensure_ascii=False)


def parse_call(text: str, fmt: str) -> Any:
    """The call an answer writes (ValueError when it does not parse)."""
    try:
        return yaml.safe_load(text) if fmt == "yaml" else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ValueError(f"the answer is not valid {fmt}: {exc}") from None


class AgentInstructor(Instructor[AgentOptions]):
    name = "agent"
    summary = "Function selection: invented functions, a user input, the call as JSON or YAML; the call checked."
    Options = AgentOptions
    calls_per_unit = {"main": 2.0}  # the functions and the user input, then the call

    def plan(self) -> Iterator[PlannedUnit]:
        domains = self.options.domains
        for i in range(self.options.count):
            yield PlannedUnit(key=f"agent-{i:05d}", payload={"domain": domains[i % len(domains)]})

    async def run(self, unit: UnitInput, teachers: Mapping[str, Teacher]) -> list[NewRecord]:
        opts, teacher = self.options, teachers["main"]
        n = opts.functions_per_unit
        schema = load_schema("agent_task")
        schema = {**schema, "properties": {**schema["properties"], "functions": {
            **schema["properties"]["functions"], "minItems": n, "maxItems": n}}}
        task = await teacher.chat([{"role": "user", "content": TASK_PROMPT.format(n=n, domain=unit.payload["domain"])}],
                                  schema=schema, schema_name="agent_task")
        functions = clean_functions(task.data["functions"])
        unit.rng().shuffle(functions)  # the listing (and the schema's branch order) need not follow the teacher's
        fmt = opts.answer_format
        instruction = CHOOSE_PROMPT.format(fmt=fmt.upper() if fmt == "json" else "YAML",
                                           user_input=task.data["user_query"].strip(),
                                           functions=functions_text(functions))

        def check(reply: Reply) -> str | None:
            return call_problem((reply.data or {}).get("call"), functions)

        meta = {"domain": unit.payload["domain"], "answer_format": fmt, "functions": functions,
                "teacher": teacher.name, "model": teacher.model}
        key = "agent:" + hashlib.sha256(instruction.encode()).hexdigest()[:32]
        try:
            reply = await teacher.chat([{"role": "user", "content": instruction}], schema=call_schema(functions),
                                       schema_name="function_call", check=check)
        except OutputRejected as exc:
            raise OutputRejected(exc.reason, raw=exc.raw, records=[NewRecord(
                key="rejected:" + key, kind="rejected", meta={**meta, "rejected_because": exc.reason},
                conversation=[{"role": "user", "content": instruction},
                              {"role": "assistant", "content": (exc.raw or "(no answer)").strip()}])]) from None
        answer = render_call(reply.data["call"], fmt)
        problem = check(reply) or call_problem(parse_call(answer, fmt), functions)  # replays are checked again
        if problem:
            raise OutputRejected(problem, raw=reply.text)
        return [NewRecord(key=key, meta={**meta, "function": reply.data["call"]["function"]},
                          conversation=[{"role": "user", "content": instruction},
                                        {"role": "assistant", "content": answer}])]
