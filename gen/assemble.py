"""`gen assemble`: one training set from several jobs and JSONL files, as bagel assembled its mix.

Each source (a job in the database, by id or name, or a JSONL file in ShareGPT, messages or Alpaca form) has a
priority. Rows are taken in priority order (higher first; equal priorities in the order listed), and a row whose
instruction was already taken is dropped: the key is the uuid5 of its normalised instruction (the user turns,
lower case, punctuation and spacing collapsed), so of two copies the higher-priority source's is kept.

Decontamination (gen.decontamination) drops rows whose instruction matches an item of a benchmark file, by word
n-gram overlap or as a near-duplicate; every dropped row is reported with the benchmark item it matched.

Rows are written with gen.export's row formatters and line validators, to a temporary file renamed into place.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gen.errors import GenError, UsageError
from gen.export import FORMATS, line_validator
from gen.decontamination import DecontaminationSpec, Decontaminator
from gen.neardup import normalise
from gen.schemas import first_problem
from gen.sources import conversation_from_row
from gen.types import Message

KEY_NAMESPACE = uuid.NAMESPACE_OID  # bagel: uuid.uuid5(uuid.NAMESPACE_OID, instruction)


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job: str | None = Field(default=None, description="A job's id or name (its newest run) in the gen database.")
    file: str | None = Field(default=None, description="A JSONL file: ShareGPT, messages or Alpaca rows.")
    priority: int = Field(default=0, description="Higher wins when two sources hold the same instruction.")
    name: str | None = Field(default=None, description="How the summary names it (default: the job or file).")

    @model_validator(mode="after")
    def one_of_job_or_file(self) -> "SourceSpec":
        if (self.job is None) == (self.file is None):
            raise ValueError("give exactly one of job or file")
        return self

    @property
    def label(self) -> str:
        return self.name or (f"job {self.job}" if self.job is not None else str(self.file))


class AssembleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    output: str = Field(description="Where to write the training set ('-' for stdout).")
    format: str = Field(default="sharegpt", description="An export format for conversations.")
    sources: list[SourceSpec] = Field(min_length=1)
    decontaminate: DecontaminationSpec | None = None
    report: str | None = Field(default=None, description="A JSONL file listing every row dropped, and why.")
    meta: bool = Field(default=False, description="Add `metadata` (source, uuid) to each line.")


# --------------------------------------------------------------------------------------------- reading
def read_spec(path: Path) -> AssembleSpec:
    """The YAML file; relative paths in it are relative to the file's folder."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path} ({exc.strerror or type(exc).__name__})") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    spec = validate_spec(data, shown_as=str(path))
    base = path.parent

    def local(p: str) -> str:
        return p if p == "-" or Path(p).is_absolute() else str(base / p)

    spec.output = local(spec.output)
    spec.report = local(spec.report) if spec.report else None
    for source in spec.sources:
        source.file = local(source.file) if source.file else None
    if spec.decontaminate:
        spec.decontaminate.benchmarks = [local(b) for b in spec.decontaminate.benchmarks]
    return spec


def validate_spec(data: Any, *, shown_as: str) -> AssembleSpec:
    try:
        spec = AssembleSpec.model_validate(data if data is not None else {})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        raise UsageError(f"{shown_as}: {where}: {message[0].lower()}{message[1:]}") from None
    if spec.format not in FORMATS:
        raise UsageError(f"{shown_as}: format: '{spec.format}' is not a conversation format "
                         f"(known: {', '.join(FORMATS)})")
    return spec


def spec_from_options(config: Path | None, *, jobs: tuple[str, ...] = (), files: tuple[str, ...] = (),
                      benchmarks: tuple[str, ...] = (), output: str | None = None, fmt: str | None = None,
                      ngram: int | None = None, ngram_overlap: float | None = None,
                      near_dup_threshold: float | None = None, report: str | None = None,
                      meta: bool | None = None) -> AssembleSpec:
    """The YAML file (when given) with the command line's options added (sources) or overriding (the rest)."""
    data: dict[str, Any] = read_spec(config).model_dump(exclude_none=True) if config else {}
    data.setdefault("sources", [])
    for kind, given in (("job", jobs), ("file", files)):
        for item in given:
            ref, sep, priority = item.rpartition("=") if "=" in item else (item, "", "0")
            try:
                data["sources"].append({kind: ref, "priority": int(priority)})
            except ValueError:
                raise UsageError(f"--{kind} {item}: the priority after '=' must be an integer") from None
    for key, value in (("output", output), ("format", fmt), ("report", report), ("meta", meta)):
        if value is not None:
            data[key] = value
    tuning = {"ngram": ngram, "ngram_overlap": ngram_overlap, "near_duplicate_threshold": near_dup_threshold}
    if benchmarks or data.get("decontaminate"):
        decontaminate = data.setdefault("decontaminate", {"benchmarks": []})
        decontaminate["benchmarks"] = [*decontaminate.get("benchmarks", []), *benchmarks]
        decontaminate.update({k: v for k, v in tuning.items() if v is not None})
    elif any(v is not None for v in tuning.values()):
        raise UsageError("--ngram, --ngram-overlap and --near-dup-threshold need a --benchmark")
    if not data["sources"]:
        raise UsageError("no sources: give an assemble file, or --job / --file")
    if "output" not in data:
        raise UsageError("no output: give -o/--output (or output: in the assemble file)")
    return validate_spec(data, shown_as=str(config) if config else "gen assemble")


@dataclass
class Row:
    conversation: list[Message]
    source: int                 # index into the spec's sources
    where: str                  # record id or file line
    instruction: str = ""
    key: str = ""


def instruction_of(conversation: list[Message]) -> str:
    return "\n".join(m["content"] for m in conversation if m["role"] == "user")


def instruction_key(instruction: str) -> str:
    return str(uuid.uuid5(KEY_NAMESPACE, normalise(instruction)))


def alpaca_conversation(row: dict[str, Any]) -> list[Message]:
    if not isinstance(row.get("instruction"), str) or not isinstance(row.get("output"), str):
        raise ValueError("an Alpaca line needs string `instruction` and `output`")
    user = row["instruction"] + (f"\n\n{row['input']}" if isinstance(row.get("input"), str) and row["input"] else "")
    system = [{"role": "system", "content": row["system"]}] if isinstance(row.get("system"), str) and \
        row["system"] else []
    return [*system, {"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]


def file_rows(path: str, index: int, bad: list[str]) -> Iterator[Row]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read source file {path} ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise UsageError(f"source file {path} is not UTF-8 text") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if isinstance(data, dict) and "instruction" in data and "output" in data:
                conversation = alpaca_conversation(data)
            else:
                conversation = conversation_from_row(data)
        except ValueError as exc:
            bad.append(f"line {number}: {exc if not isinstance(exc, json.JSONDecodeError) else 'not valid JSON'}")
            continue
        yield Row(conversation, index, f"line {number}")


def job_rows(store: Any, ref: str, index: int) -> Iterator[Row]:
    job = store.find_job(ref)
    for record in store.iter_records(job.id, kind="conversation"):
        yield Row(list(record.conversation), index, f"record {record.id}")


# ------------------------------------------------------------------------------------------ assembling
@dataclass
class SourceSummary:
    label: str
    priority: int
    read: int = 0
    kept: int = 0
    duplicates: int = 0
    duplicates_of: dict[str, int] = field(default_factory=dict)
    contaminated: int = 0
    unwritable: int = 0
    bad_lines: list[str] = field(default_factory=list)


@dataclass
class AssembleReport:
    output: str
    format: str
    written: int
    sources: list[SourceSummary]
    removed: list[dict[str, Any]]

    def lines(self) -> list[str]:
        out = [f"gen assemble: {self.written} {self.format} lines written to {self.output}"]
        width = max(len(s.label) for s in self.sources)
        for s in self.sources:
            why = []
            if s.duplicates:
                why.append(f"{s.duplicates} duplicates (kept from " +
                           ", ".join(f"{k}: {v}" for k, v in s.duplicates_of.items()) + ")")
            if s.contaminated:
                why.append(f"{s.contaminated} matched a benchmark")
            if s.unwritable:
                why.append(f"{s.unwritable} not writable as {self.format}")
            if s.bad_lines:
                why.append(f"{len(s.bad_lines)} unreadable lines (first: {s.bad_lines[0]})")
            read = s.read + len(s.bad_lines)  # lines of a file, unreadable ones included
            lost = read - s.kept
            out.append(f"  {s.label:<{width}}  priority {s.priority:>3}  read {read:>6}  kept {s.kept:>6}  "
                       f"lost {lost:>6}" + (f": {'; '.join(why)}" if why else ""))
        return out


def assemble(spec: AssembleSpec, *, store: Any | None) -> AssembleReport:
    """Combine, deduplicate, decontaminate and write; returns what each source gave and lost."""
    if any(s.job is not None for s in spec.sources) and store is None:
        raise UsageError("job sources need the gen database")
    convert = FORMATS[spec.format]
    validator = line_validator(spec.format)
    decontaminator = Decontaminator(spec.decontaminate) if spec.decontaminate else None
    summaries = [SourceSummary(s.label, s.priority) for s in spec.sources]
    order = sorted(range(len(spec.sources)), key=lambda i: (-spec.sources[i].priority, i))
    taken: dict[str, int] = {}
    removed: list[dict[str, Any]] = []
    lines: list[str] = []
    for index in order:
        source, summary = spec.sources[index], summaries[index]
        rows = job_rows(store, source.job, index) if source.job is not None else \
            file_rows(source.file or "", index, summary.bad_lines)
        for row in rows:
            summary.read += 1
            row.instruction = instruction_of(row.conversation)
            row.key = instruction_key(row.instruction)
            if row.key in taken:
                owner = summaries[taken[row.key]].label
                summary.duplicates += 1
                summary.duplicates_of[owner] = summary.duplicates_of.get(owner, 0) + 1
                removed.append(_removed(row, summary, "duplicate", {"kept_from": owner}))
                continue
            match = decontaminator.match(row.instruction) if decontaminator else None
            if match:
                summary.contaminated += 1
                removed.append(_removed(row, summary, "benchmark", {
                    "test": match.test, "score": match.score,
                    "benchmark": {"file": match.item.file, "line": match.item.line, "text": match.item.text}}))
                continue
            try:
                line = convert(row.conversation)
            except GenError as exc:
                summary.unwritable += 1
                removed.append(_removed(row, summary, "format", {"problem": str(exc)}))
                continue
            problem = first_problem(validator, line)
            if problem:
                raise GenError(f"{summary.label} {row.where} does not make a valid {spec.format} line: {problem}")
            if spec.meta:
                line["metadata"] = {"source": summary.label, "uuid": row.key, "from": row.where}
            taken[row.key] = index
            summary.kept += 1
            lines.append(json.dumps(line, ensure_ascii=False))
    if not lines:
        reasons: dict[str, int] = defaultdict(int)
        for r in removed:
            reasons[r["reason"]] += 1
        why = ", ".join(f"{n} {reason}" for reason, n in reasons.items()) or "the sources have no rows"
        raise UsageError(f"nothing written: no row was kept ({why}); an empty JSONL file breaks trainers")
    write_atomically(spec.output, lines)
    if spec.report:
        write_atomically(spec.report, [json.dumps(r, ensure_ascii=False) for r in removed])
    return AssembleReport(spec.output, spec.format, len(lines), summaries, removed)


def _removed(row: Row, summary: SourceSummary, reason: str, detail: dict[str, Any]) -> dict[str, Any]:
    return {"source": summary.label, "from": row.where, "uuid": row.key, "reason": reason,
            "instruction": row.instruction, **detail}


def write_atomically(output: str, lines: list[str]) -> None:
    text = "".join(line + "\n" for line in lines)
    if output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    dest = Path(output)
    if not dest.parent.exists():
        raise UsageError(f"cannot write {output}: folder {dest.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as sink:
            sink.write(text)
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
