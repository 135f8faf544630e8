"""`gen export`: stream a job's records into the JSONL shapes trainers read, each line schema-checked.

The file is written beside its destination and renamed into place at the end, so a refused or interrupted
export never leaves half a file where a trainer would read it.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gen.errors import GenError, UsageError
from gen.schemas import first_problem, load_schema, validator_for_schema_text
from gen.store import Store

DEFAULT_REFUSAL_PHRASES = (
    "as an ai language model", "as an ai model", "as a language model", "as an ai developed by",
    "i'm sorry, but i can't", "i am sorry, but i cannot", "i'm sorry, but i cannot", "i cannot fulfill",
    "i can't fulfill", "i can't assist with", "i cannot assist with", "i'm unable to help with",
    "i am unable to comply", "i'm not able to provide", "openai's content policy", "against my programming",
)

SHAREGPT_ROLE = {"system": "system", "user": "human", "assistant": "gpt"}


class RefusalFilter:
    """Drops conversations whose assistant turns contain a refusal or an AI disclaimer."""

    def __init__(self, phrases: Iterable[str] = DEFAULT_REFUSAL_PHRASES):
        self.phrases = tuple(dict.fromkeys(p.lower() for p in phrases if p.strip()))

    def match(self, conversation: list[dict[str, str]]) -> str | None:
        for msg in conversation:
            if msg["role"] != "assistant":
                continue
            text = msg["content"].lower().replace("\u2019", "'")
            for phrase in self.phrases:
                if phrase in text:
                    return phrase
        return None


def to_sharegpt(conv: list[dict[str, str]]) -> dict[str, Any]:
    return {"conversations": [{"from": SHAREGPT_ROLE[m["role"]], "value": m["content"]} for m in conv]}


def to_messages(conv: list[dict[str, str]]) -> dict[str, Any]:
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in conv]}


def to_alpaca(conv: list[dict[str, str]]) -> dict[str, Any]:
    system = [m["content"] for m in conv if m["role"] == "system"]
    turns = [m for m in conv if m["role"] != "system"]
    if len(turns) != 2:
        raise SingleTurnOnly("alpaca")
    row = {"instruction": turns[0]["content"], "input": "", "output": turns[1]["content"]}
    if system:
        row["system"] = system[0]
    return row


class SingleTurnOnly(UsageError):
    def __init__(self, fmt: str):
        super().__init__(f"format '{fmt}' holds single-turn conversations only, and this job has multi-turn "
                         "ones: export it as sharegpt or messages instead")


FORMATS: dict[str, Callable[[list[dict[str, str]]], dict[str, Any]]] = {
    "sharegpt": to_sharegpt, "messages": to_messages, "alpaca": to_alpaca,
}


@dataclass
class ExportReport:
    written: int = 0
    filtered: int = 0
    by_phrase: dict[str, int] = field(default_factory=dict)


def line_validator(fmt: str):
    schema = load_schema("conversation")
    one = {"$defs": schema["$defs"], "$ref": f"#/$defs/{fmt}"}
    return validator_for_schema_text(json.dumps(one, sort_keys=True))


def export_job(store: Store, job_id: str, output: str, fmt: str, *, refusal_filter: RefusalFilter | None,
               with_meta: bool = False, rejected: bool = False) -> ExportReport:
    """`with_meta` adds each record's metadata (teacher, judge scores, ...) as a `metadata` field, which
    trainers ignore; `rejected` exports the conversations kept for review instead of the accepted ones."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format '{fmt}' (known: {', '.join(FORMATS)})")
    convert = FORMATS[fmt]
    validator = line_validator(fmt)
    report = ExportReport()
    to_stdout = output == "-"
    if to_stdout:
        sink, tmp_path = sys.stdout, None
    else:
        dest = Path(output)
        if dest.parent and not dest.parent.exists():
            raise UsageError(f"cannot write {output}: folder {dest.parent} does not exist")
        fd, tmp_path = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent or ".")
        sink = os.fdopen(fd, "w", encoding="utf-8")
    try:
        for record in store.iter_records(job_id, kind="rejected" if rejected else "conversation"):
            if refusal_filter is not None:
                phrase = refusal_filter.match(record.conversation)
                if phrase:
                    report.filtered += 1
                    report.by_phrase[phrase] = report.by_phrase.get(phrase, 0) + 1
                    continue
            row = convert(record.conversation)
            problem = first_problem(validator, row)
            if problem:
                raise GenError(f"record {record.id} does not make a valid {fmt} line: {problem}")
            if with_meta:
                row["metadata"] = {**record.meta, "record_id": record.id, "key": record.key}
            sink.write(json.dumps(row, ensure_ascii=False) + "\n")
            report.written += 1
        sink.flush()
        if tmp_path:
            sink.close()
            os.replace(tmp_path, output)
            tmp_path = None
    finally:
        if tmp_path:
            sink.close()
            os.unlink(tmp_path)
    return report
