"""Where system prompts come from: inline entries, a YAML/JSONL/text file, or an earlier `system_prompts` job.

An entry is a prompt with, optionally, its category, its machine-checkable constraints and user intents that
suit it. An earlier job's records are read through `gen.sources`, once, by `plan()` when a job is created.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gen.config import BoundedLoader
from gen.errors import JobFileError
from gen.sources import SourceConversation, read_text_file
from gen.instructors.systemchat.constraints import parse_constraints

PROMPT_FIELDS = ("prompt", "system_prompt", "system", "text")


@dataclass(frozen=True)
class PromptEntry:
    prompt: str
    category: str | None = None
    constraints: tuple[str, ...] = ()      # canonical ids, e.g. ("no_letter:e",)
    intents: tuple[str, ...] = ()
    source: str = "inline"

    def to_payload(self) -> dict[str, Any]:
        return {"system_prompt": self.prompt, "category": self.category, "constraints": list(self.constraints),
                "intents": list(self.intents), "source": self.source}


def entry_from(value: Any, *, source: str) -> PromptEntry:
    """An entry from a string or a mapping (`prompt`, `category`, `constraint`/`constraints`, `intents`), or from
    an exported training line (`conversations`/`messages`, with `metadata` when exported with --meta)."""
    if isinstance(value, str):
        value = {"prompt": value}
    if not isinstance(value, dict):
        raise ValueError("an entry is a prompt string or a mapping with a 'prompt'")
    if "conversations" in value or "messages" in value:
        value = _from_training_line(value)
    text = next((value[f] for f in PROMPT_FIELDS if isinstance(value.get(f), str)), None)
    if text is None or not text.strip():
        raise ValueError("no prompt text (expected one of: " + ", ".join(PROMPT_FIELDS) + ")")
    spec = value.get("constraints", value.get("constraint"))
    constraints = tuple(c.id for c in parse_constraints(spec))
    intents = value.get("intents") or []
    if not isinstance(intents, list) or not all(isinstance(i, str) and i.strip() for i in intents):
        raise ValueError("'intents' must be a list of strings")
    category = value.get("category")
    return PromptEntry(text.strip(), str(category) if category else None, constraints, tuple(intents), source)


def _from_training_line(row: dict[str, Any]) -> dict[str, Any]:
    turns = row.get("conversations") or row.get("messages") or []
    answers = [t.get("value", t.get("content")) for t in turns
               if isinstance(t, dict) and (t.get("from") == "gpt" or t.get("role") == "assistant")]
    meta = row.get("metadata") or {}
    return {"prompt": answers[-1] if answers else None, "category": meta.get("category"),
            "constraints": meta.get("constraints"), "intents": meta.get("intents")}


def read_prompt_file(path: Path, *, job_source: str, option: str) -> list[PromptEntry]:
    """Entries from `.yaml`/`.yml` (a list, or a mapping with `prompts`), `.jsonl` (one entry per line) or
    text (one prompt per non-empty line). Problems are JobFileErrors naming the option, the file and the entry."""
    def bad(where: str, problem: str) -> JobFileError:
        return JobFileError(job_source, [f"instructor.{option}: {path} {where}: {problem}"])

    text = read_text_file(path, label=job_source, option=f"instructor.{option}")
    if not text.strip():
        raise bad("", "the file is empty")
    label = f"file:{path.name}"
    rows: list[tuple[str, Any]]
    if path.suffix in (".yaml", ".yml"):
        try:
            data = yaml.load(text, Loader=BoundedLoader)  # noqa: S506 - a SafeLoader that refuses alias bombs
        except yaml.YAMLError as exc:
            raise bad("", f"invalid YAML ({getattr(exc, 'problem', None) or exc})") from None
        except (ValueError, RecursionError) as exc:
            raise bad("", str(exc) or "nested too deeply") from None
        if isinstance(data, dict):
            data = data.get("prompts", data.get("system_prompts"))
        if not isinstance(data, list):
            raise bad("", "expected a list of entries (or a mapping with 'prompts:')")
        rows = [(f"entry {i}", item) for i, item in enumerate(data, 1)]
    elif path.suffix in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((f"line {number}", json.loads(line)))
                except ValueError:
                    raise bad(f"line {number}", "not valid JSON") from None
    else:
        rows = [(f"line {n}", line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    entries = []
    for where, row in rows:
        try:
            entries.append(entry_from(row, source=label))
        except ValueError as exc:
            raise bad(where, str(exc)) from None
    if not entries:
        raise bad("", "holds no prompts")
    return entries


def entries_from_job(found: list[SourceConversation], *, job_source: str,
                     option: str = "system_prompts_job") -> list[PromptEntry]:
    """The prompts a `system_prompts` job stored (`found`, read once at plan time through the job services):
    each record's assistant turn, with its category and constraints."""
    job_id, instructor = found[0].link["job_id"], found[0].author["instructor"]
    if instructor != "system_prompts":
        raise JobFileError(job_source, [f"instructor.{option}: job {job_id} is a '{instructor}' job, "
                                        "not a 'system_prompts' one"])
    entries = []
    for source in found:
        answers = [m["content"] for m in source.conversation if m["role"] == "assistant"]
        try:
            entries.append(entry_from({"prompt": answers[-1] if answers else None,
                                       "category": source.meta.get("category"),
                                       "constraints": source.meta.get("constraints")}, source=f"job:{job_id}"))
        except ValueError as exc:
            raise JobFileError(job_source, [f"instructor.{option}: record {source.link['record_key']}: {exc}"]) from None
    return entries
