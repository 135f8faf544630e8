"""Where system prompts come from: inline entries, a YAML/JSONL/text file, or an earlier `system_prompts` job.

An entry is a prompt with, optionally, its category, its machine-checkable constraints and user intents that
suit it. `load_job_records` is the one place this package opens the store: `plan()` calls it to read an
earlier job's records, once, when a job is created.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gen.errors import JobFileError, UnknownJobError
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


@dataclass
class JobRecords:
    job_id: str
    instructor: str
    records: list[dict[str, Any]] = field(default_factory=list)


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

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise JobFileError(job_source, [f"instructor.{option}: cannot read {path} ({exc.strerror})"]) from None
    label = f"file:{path.name}"
    rows: list[tuple[str, Any]]
    if path.suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise bad("", f"invalid YAML ({getattr(exc, 'problem', None) or exc})") from None
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
    return entries


def load_job_records(ref: str, kind: str = "conversation") -> JobRecords:
    """The records of an earlier job (by id or name) in the database of this environment (GEN_DATABASE_URL).

    The only function in this package that opens the store; called from `plan()`, never from `run()`."""
    from gen.config import load_settings
    from gen.store import Store

    url = load_settings().database_url
    if url.startswith("sqlite:///"):
        from sqlalchemy.engine import make_url

        path = make_url(url).database
        if path and path != ":memory:" and not Path(path).exists():
            raise UnknownJobError(ref)  # no database yet: no job either (and do not create an empty one)
    store = Store(url)
    try:
        job = store.find_job(ref)
        records = [{"key": r.key, "conversation": r.conversation, "meta": r.meta}
                   for r in store.iter_records(job.id, kind=kind)]
        return JobRecords(job.id, job.instructor, records)
    finally:
        store.close()


def entries_from_job(ref: str, *, job_source: str, option: str = "system_prompts_job") -> list[PromptEntry]:
    """The prompts a `system_prompts` job stored: each record's assistant turn, with its category and constraints."""

    try:
        found = load_job_records(ref)
    except UnknownJobError as exc:
        raise JobFileError(job_source, [f"instructor.{option}: {exc}"]) from None
    if found.instructor != "system_prompts":
        raise JobFileError(job_source, [f"instructor.{option}: job {found.job_id} is a '{found.instructor}' job, "
                                        "not a 'system_prompts' one"])
    entries = []
    for record in found.records:
        meta = record["meta"] or {}
        answers = [m["content"] for m in record["conversation"] if m["role"] == "assistant"]
        try:
            entries.append(entry_from({"prompt": answers[-1] if answers else None, "category": meta.get("category"),
                                       "constraints": meta.get("constraints")}, source=f"job:{found.job_id}"))
        except ValueError as exc:
            raise JobFileError(job_source, [f"instructor.{option}: record {record['key']}: {exc}"]) from None
    if not entries:
        raise JobFileError(job_source, [f"instructor.{option}: job {found.job_id} has no system prompts yet"])
    return entries
